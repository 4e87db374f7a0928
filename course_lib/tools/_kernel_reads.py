"""Run inside a notebook's kernel by ``course notebooks refresh``, before the first cell.

It logs every file under ``$COURSE_READS_ROOT`` that the kernel opens for reading (modules,
their cached bytecode, data, weights) to ``$COURSE_READS_LOG``, one path a line, so the refresh
can record what the notebook's outputs depend on (``course_lib.tools.provenance``). It uses an audit
hook (PEP 578), which sees every ``open``, imports included, and changes nothing the cells do.

IPython runs this file in the notebook's own namespace, so it defines one function, calls it
and deletes it: a notebook must not find a name here that it never imported.
"""


def _course_log_reads() -> None:
    import os
    import sys

    root = os.environ.get("COURSE_READS_ROOT")
    log_path = os.environ.get("COURSE_READS_LOG")
    if not root or not log_path:
        return
    root = os.path.join(os.path.realpath(root), "")
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the kernel's life)
    seen: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event != "open":
            return
        try:
            path, mode = args[0], args[1]
            if not isinstance(path, str) or (mode and any(c in mode for c in "wax+")):
                return
            path = os.path.realpath(path)
            if path.startswith(root) and path not in seen:
                seen.add(path)
                log.write(path + "\n")
                log.flush()
        except Exception:  # an audit hook must never break the cell that opened a file
            pass

    sys.addaudithook(hook)


_course_log_reads()
del _course_log_reads
