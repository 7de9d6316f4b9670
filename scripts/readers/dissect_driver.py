"""Driver for fox-it's dissect.hypervisor (dissect.hypervisor.disk.hdd): opens a bundle, reads
the whole disk through the top snapshot it picks, prints a hash per MiB, then does the same for
each snapshot of the descriptor it can open. Output format: see common.py, plus

    snapshot GUID            the lines up to the next `snapshot` or `done` are that snapshot's
"""

import os
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from dissect.hypervisor.disk.hdd import HDD  # noqa: E402


def read_stream(stream, read_size, max_bytes):
    size = stream.size
    common.say("media_size", size)

    def read_at(offset, length):
        stream.seek(offset)
        return stream.read(length)

    common.read_all(read_at, size, read_size, max_bytes)


def main():
    path, read_size, max_bytes = common.parse_args(sys.argv[1:])
    common.limit_memory()
    common.say("reader", "dissect.hypervisor", version("dissect.hypervisor"))
    wrapped = None
    if not common.is_bundle(path):
        wrapped = common.wrap_lone(path)
        path = wrapped
    try:
        shots = []
        try:
            hdd = HDD(Path(path))
            shots = [shot.guid for shot in hdd.descriptor.snapshots.shots]
            read_stream(hdd.open(), read_size, max_bytes)
        except Exception as exc:  # the reader's refusal, whatever its type
            common.say("refuses", common.one_line(exc))
        for guid in shots:
            common.say("snapshot", "{" + str(guid) + "}")
            try:
                read_stream(hdd.open(guid), read_size, max_bytes)
            except Exception as exc:
                common.say("refuses", common.one_line(exc))
        common.say("done")
    finally:
        if wrapped:
            common.remove_wrap(wrapped)


main()
