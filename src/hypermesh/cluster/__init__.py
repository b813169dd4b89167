"""Many agents as one: membership through etcd, fan-out with honest partial answers, cluster views (docs/cluster.md).

The agent registers itself (membership.Registration) when started with ``--etcd``; ``hypermesh cluster`` finds the
agents (targets.resolve), asks them all at once (fanout.collect) and turns the answers into one view (aggregate).
"""

__all__: list[str] = []
