"""Rewrite a `docker save` archive so that `kind build node-image` sees every image in it.

    python3 hack/kind/fullnames.py IN.tar OUT.tar

kind (pkg/build/nodeimage/internal/container/docker/archive.go) reads an archive's names from
whichever of `repositories` and `manifest.json` comes first, and from manifest.json only its
first image; docker writes manifest.json first and Docker Hub names short (kindest/x:tag), while
kind compares full references (docker.io/kindest/x:tag) and pulls every one it does not find.
So: full names in both files, and `repositories` (which lists every image) first.
"""

import io
import json
import sys
import tarfile

INDEXES = ("repositories", "manifest.json")


def full(name: str) -> str:
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if rest else "library/" + name)


def rewrite(member: str, data: bytes) -> bytes:
    doc = json.loads(data)
    if member == "manifest.json":
        for entry in doc:
            entry["RepoTags"] = [full(tag) for tag in entry.get("RepoTags") or []]
    else:  # repositories: {repo: {tag: id}}
        doc = {full(repo): tags for repo, tags in doc.items()}
    return json.dumps(doc).encode()


def main(src: str, dst: str) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        members = tin.getmembers()
        indexes = {m.name: m for m in members if m.name in INDEXES}
        for name in INDEXES:
            if name in indexes:
                info = indexes[name]
                data = rewrite(name, tin.extractfile(info).read())
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))
        for info in members:
            if info.name not in INDEXES:
                tout.addfile(info, tin.extractfile(info) if info.isfile() else None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
