"""Rewrite a `docker save` archive so every image name is fully qualified.

    python3 hack/kind/fullnames.py IN.tar OUT.tar

docker writes Docker Hub names short (kindest/kindnetd:tag, in manifest.json and
repositories); `kind build node-image` compares an archive's names with the full references
it would otherwise pull (docker.io/kindest/kindnetd:tag), so it would try to pull them.
"""

import io
import json
import sys
import tarfile


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
        for info in tin:
            body = tin.extractfile(info) if info.isfile() else None
            if body is not None and info.name in ("manifest.json", "repositories"):
                data = rewrite(info.name, body.read())
                info.size = len(data)
                body = io.BytesIO(data)
            tout.addfile(info, body)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
