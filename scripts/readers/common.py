"""Shared parts of the reader drivers (libphdi_driver.py, dissect_driver.py).

Each driver is run by `prlimg` (oracle::Libphdi, oracle::Dissect) as a separate process with a
timeout. It prints one line per fact, words separated by single spaces:

    reader NAME VERSION
    wrapped DIR              a lone image was put in a minimal bundle in DIR
    media_size BYTES
    mib INDEX LENGTH MD5     one per MiB read (the last one may be shorter)
    short OFFSET             a read returned fewer bytes than asked: reading stopped there
    capped BYTES             reading stopped at the --max-bytes cap
    refuses TEXT             the reader raised an error (its type and message on one line)
    done

A signal kills the process when the reader crashes; the caller's timeout is a hang.
"""

import hashlib
import os
import struct
import sys
import tempfile

MIB = 1 << 20
DEFAULT_TOP = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
NULL_GUID = "{00000000-0000-0000-0000-000000000000}"


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def one_line(exc):
    text = f"{type(exc).__name__}: {exc}"
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def parse_args(argv):
    """PATH [--read-size BYTES] [--max-bytes BYTES]"""
    path, read_size, max_bytes = None, MIB, 1 << 30
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--read-size":
            read_size = int(argv[i + 1])
            i += 2
        elif a == "--max-bytes":
            max_bytes = int(argv[i + 1])
            i += 2
        else:
            path = a
            i += 1
    if path is None or read_size <= 0:
        sys.stderr.write("usage: DRIVER PATH [--read-size BYTES] [--max-bytes BYTES]\n")
        sys.exit(64)
    return path, read_size, max_bytes


def is_bundle(path):
    if os.path.isdir(path):
        return True
    if path.lower().endswith(".xml"):
        return True
    with open(path, "rb") as f:
        head = f.read(64)
    return head.lstrip().startswith(b"<")


def wrap_lone(path):
    """Puts a lone image in a minimal bundle (a temporary folder with a link to the image and
    a descriptor naming it as the one Compressed image of one storage); returns the folder."""
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 64:
        head = head.ljust(64, b"\0")
    magic = head[:16]
    tracks = struct.unpack_from("<I", head, 28)[0]
    if magic == b"WithoutFreeSpace":
        sectors = struct.unpack_from("<I", head, 36)[0]
    else:
        sectors = struct.unpack_from("<Q", head, 36)[0]
    folder = tempfile.mkdtemp(prefix="prlimg-wrap-", suffix=".hdd")
    name = "image.hds"
    os.symlink(os.path.abspath(path), os.path.join(folder, name))
    cyl = sectors // (16 * 32) if sectors else 0
    xml = f"""<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters>
    <Disk_size>{sectors}</Disk_size>
    <Cylinders>{cyl}</Cylinders>
    <Heads>16</Heads>
    <Sectors>32</Sectors>
    <Padding>0</Padding>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>{sectors}</End>
      <Blocksize>{tracks}</Blocksize>
      <Image>
        <GUID>{DEFAULT_TOP}</GUID>
        <Type>Compressed</Type>
        <File>{name}</File>
      </Image>
    </Storage>
  </StorageData>
  <Snapshots>
    <Shot>
      <GUID>{DEFAULT_TOP}</GUID>
      <ParentGUID>{NULL_GUID}</ParentGUID>
    </Shot>
  </Snapshots>
</Parallels_disk_image>
"""
    with open(os.path.join(folder, "DiskDescriptor.xml"), "w") as f:
        f.write(xml)
    open(os.path.join(folder, os.path.basename(folder)), "w").close()
    say("wrapped", folder)
    return folder


def remove_wrap(folder):
    for entry in os.listdir(folder):
        os.unlink(os.path.join(folder, entry))
    os.rmdir(folder)


def read_all(read_at, size, read_size, max_bytes):
    """Reads [0, size) in reads of read_size bytes and prints an MD5 per MiB."""
    end = min(size, max_bytes)
    pending = bytearray()
    index = 0
    offset = 0
    while offset < end:
        want = min(read_size, end - offset)
        data = read_at(offset, want)
        pending += data
        while len(pending) >= MIB:
            say("mib", index, MIB, hashlib.md5(pending[:MIB]).hexdigest())
            del pending[:MIB]
            index += 1
        offset += len(data)
        if len(data) < want:
            if pending:
                say("mib", index, len(pending), hashlib.md5(pending).hexdigest())
            say("short", offset)
            return
    if pending:
        say("mib", index, len(pending), hashlib.md5(pending).hexdigest())
    if end < size:
        say("capped", end)


def limit_memory(limit=20 << 30):
    """Bounds the address space, above what a reader asks for at once (a whole BAT of 2^32
    entries is 16 GiB), so that a reader that loops while growing a list (dissect on a cycle of
    parents) ends in MemoryError, which the caller takes for the hang it is."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
