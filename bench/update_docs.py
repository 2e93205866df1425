#!/usr/bin/env python3
"""Put a generated table into a doc between its markers, atomically:

    python3 bench/update_docs.py DOC TAG TABLE [--check]

replaces what stands between `<!-- TAG:begin -->` and `<!-- TAG:end -->` in DOC with the
contents of the file TABLE (the bench scripts' --update-docs). --check only tests that DOC
has both markers (so a script can refuse before a long run, not after it). Exit 1 with one
line naming DOC and the marker when they are missing; DOC is never half-written."""
import os
import sys


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    if len(args) != (2 if check else 3):
        sys.exit("usage: update_docs.py DOC TAG TABLE | update_docs.py DOC TAG --check")
    doc, tag = args[0], args[1]
    begin, end = "<!-- %s:begin -->" % tag, "<!-- %s:end -->" % tag
    try:
        text = open(doc).read()
    except OSError as e:
        sys.exit("update_docs.py: %s: %s" % (doc, e.strerror))
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        sys.exit("update_docs.py: %s has no %s ... %s markers" % (doc, begin, end))
    if check:
        return
    table = open(args[2]).read()
    new = text[:i + len(begin)] + "\n" + table + text[j:]
    with open(doc + ".tmp", "w") as f:
        f.write(new)
    os.replace(doc + ".tmp", doc)


if __name__ == "__main__":
    main(sys.argv[1:])
