"""Driver for libyal's libphdi (pyphdi): opens a bundle, reads the whole disk, prints a hash
per MiB. Output format: see common.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import pyphdi  # noqa: E402


def main():
    path, read_size, max_bytes = common.parse_args(sys.argv[1:])
    common.limit_memory()
    common.say("reader", "libphdi", pyphdi.get_version())
    wrapped = None
    if not common.is_bundle(path):
        wrapped = common.wrap_lone(path)
        path = wrapped
    try:
        handle = pyphdi.handle()
        try:
            handle.open(path)
            handle.open_extent_data_files()
            size = handle.get_media_size()
            common.say("media_size", size)

            def read_at(offset, length):
                return handle.read_buffer_at_offset(length, offset)

            common.read_all(read_at, size, read_size, max_bytes)
        except Exception as exc:  # the reader's refusal, whatever its type
            common.say("refuses", common.one_line(exc))
        common.say("done")
    finally:
        if wrapped:
            common.remove_wrap(wrapped)


main()
