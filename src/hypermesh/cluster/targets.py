"""Which agents a cluster command asks: from etcd (``--etcd``), from URLs (``--node``), or from a file (``--nodes``)."""

from __future__ import annotations

import urllib.parse

from hypermesh._files import FileReadError, FileTooLarge, NotRegularFile, read_regular_file
from hypermesh.cluster.etcd import Etcd
from hypermesh.cluster.fanout import Node
from hypermesh.cluster.membership import check_agent_url, check_node_id, discover
from hypermesh.errors import BackendError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["file_sd", "resolve"]

MAX_NODES_FILE_BYTES = 4 * 1024 * 1024


def _node_from_url(url: str, where: str) -> Node:
    url = check_agent_url(url, where)
    return Node(urllib.parse.urlsplit(url).netloc, url)


def _read_nodes_file(path: str) -> list[Node]:
    """One agent per line: ``URL`` or ``NODE-ID URL``; blank lines and ``#`` comments are skipped."""
    try:
        text = read_regular_file(path, MAX_NODES_FILE_BYTES).data.decode("utf-8", errors="replace")
    except OSError as exc:
        raise InvalidInput(f"--nodes: cannot read {path}: {exc.strerror or exc}") from None
    except (FileReadError, FileTooLarge, NotRegularFile) as exc:
        raise InvalidInput(f"--nodes: {exc}; give a text file with one agent URL per line") from None
    nodes = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"--nodes {path}:{number}"
        if len(words) == 1:
            nodes.append(_node_from_url(words[0], where))
        elif len(words) == 2:
            nodes.append(Node(check_node_id(words[0], where), check_agent_url(words[1], where)))
        else:
            raise InvalidInput(f"{where}: expected 'URL' or 'NODE-ID URL', got {len(words)} words")
    if not nodes:
        raise InvalidInput(f"--nodes: {path} lists no agents; put one URL per line")
    return nodes


def resolve(
    etcd_url: str | None, node_urls: Sequence[str] | None, nodes_file: str | None, etcd_timeout_s: float = 5.0
) -> tuple[list[Node], dict[str, float]]:
    """The agents to ask, and the sampling interval each registered with (etcd only; {} otherwise)."""
    given = sum(x is not None and x != [] for x in (etcd_url, node_urls, nodes_file))
    if given == 0:
        raise InvalidInput("no agents given: use --etcd URL, --node URL (repeatable) or --nodes FILE")
    if given > 1:
        raise InvalidInput("give one of --etcd, --node or --nodes, not several")
    if etcd_url is not None:
        members = discover(Etcd(etcd_url, etcd_timeout_s))
        if not members:
            raise BackendError(f"no agents are registered in etcd at {etcd_url}; start them with --etcd {etcd_url}")
        return [Node(m.node_id, m.url, m.labels) for m in members], {m.node_id: m.interval_s for m in members}
    if node_urls:
        nodes = [_node_from_url(url, "--node") for url in node_urls]
    else:
        assert nodes_file is not None
        nodes = _read_nodes_file(nodes_file)
    seen: set[str] = set()
    for node in nodes:
        if node.node_id in seen:
            raise InvalidInput(f"agent {node.node_id} is given twice; give each once")
        seen.add(node.node_id)
    return nodes, {}


def file_sd(nodes: Sequence[Node]) -> list[dict[str, object]]:
    """Prometheus file_sd_configs target groups: host:port of each agent, its node id and labels as labels.

    The scheme is not part of a target: a job scrapes all its targets with one scheme (set it in the job)."""
    import urllib.parse

    groups: list[dict[str, object]] = []
    for node in nodes:
        labels = {f"node_{k}" if not k.startswith("__") else k: v for k, v in node.labels.items()}
        groups.append(
            {"targets": [urllib.parse.urlsplit(node.url).netloc], "labels": {"node_id": node.node_id, **labels}}
        )
    return groups
