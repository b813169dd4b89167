"""The built-in programs: ``<name>.bpf.c`` (source), ``<name>.bpf.o`` (committed, built by ``make bpf``)
and ``<name>.py`` (the thin wrapper exposing ``PROGRAM``, a ``hypermesh.ebpf.Program`` subclass)."""
