#!/usr/bin/env bash
# The oracle for the Dockerfile case table: builds each case with Docker's CLASSIC builder
# (DOCKER_BUILDKIT=0; BuildKit for a case that says builder = "buildkit") and checks what
# Docker produced against the case's expectations. The format is in README.md beside it.
#
#   bash oracle.sh [--show] [--keep] CASE.toml...
#
#   --show  also print what Docker produced (Config, the paths that differ from the base
#           image, history, or the build's error output): the way to fill in a new case.
#   --keep  leave the images and the temporary directories (default: remove them).
#
# Needs: docker (daemon reachable), python3 >= 3.11 (tomllib) or python3 with tomli.
# The base image busybox:latest is imported from this machine's /bin/busybox (Debian's
# busybox-static) when it is missing, exactly as weft's tests make theirs (see README.md).
# Exit status: 0 when every case matches Docker, 1 on any mismatch, 2 on a usage error.
set -euo pipefail
exec python3 - "$@" <<'PYTHON'
import gzip, io, json, os, re, shutil, subprocess, sys, tarfile, tempfile

try:
    import tomllib
except ImportError:  # python < 3.11
    import tomli as tomllib

BASE = "busybox:latest"
APPLETS = ("sh sleep cat echo ls hostname ps head tr id touch seq true false wc grep ping "
           "nslookup nc ip wget httpd kill printf env netstat timeout mkdir rm tty stty").split()
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
TAR_MTIME = 1700000000


def run(args, env=None):
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)


def docker_ok(args):
    r = run(["docker"] + args)
    if r.returncode != 0:
        raise RuntimeError("docker %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def ensure_base():
    if run(["docker", "image", "inspect", BASE]).returncode == 0:
        return
    root = tempfile.mkdtemp(prefix="weft-bbroot.")
    try:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
            os.mkdir(os.path.join(root, d))
            os.chmod(os.path.join(root, d), mode)
        shutil.copyfile("/bin/busybox", os.path.join(root, "bin/busybox"))
        os.chmod(os.path.join(root, "bin/busybox"), 0o755)
        for a in APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", a))
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            f.write(PASSWD)
        os.chmod(os.path.join(root, "etc/passwd"), 0o644)
        os.chmod(root, 0o755)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
            def owner(ti):
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = "root"
                return ti
            t.add(root, arcname=".", filter=owner)
        p = subprocess.run(["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", BASE],
                           input=buf.getvalue(), capture_output=True)
        if p.returncode != 0:
            raise RuntimeError("docker import: " + p.stderr.decode())
    finally:
        shutil.rmtree(root)


def make_targz(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        for e in entries:
            kind = e.get("kind", "file")
            ti = tarfile.TarInfo(e["path"].strip("/") + ("/" if kind == "dir" else ""))
            uid, gid = e.get("owner", "0:0").split(":")
            ti.uid, ti.gid = int(uid), int(gid)
            ti.uname = ti.gname = ""
            ti.mtime = TAR_MTIME
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = int(e.get("mode", "0755"), 8)
                t.addfile(ti)
            else:
                data = e.get("content", "").encode()
                ti.size = len(data)
                ti.mode = int(e.get("mode", "0644"), 8)
                t.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def materialize(case, dockerfile, ctx):
    """The case's [[context]] plus its Dockerfile at the root as `Dockerfile`."""
    os.makedirs(ctx, exist_ok=True)
    os.chmod(ctx, 0o755)
    dir_modes = {}
    implied = set()
    for e in case.get("context", []):
        rel = e["path"].strip("/")
        p = os.path.join(ctx, rel)
        parent = os.path.dirname(rel)
        while parent:
            implied.add(parent)
            parent = os.path.dirname(parent)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        kind = e.get("kind", "file")
        if kind == "file":
            with open(p, "wb") as f:
                f.write(e.get("content", "").encode())
            os.chmod(p, int(e.get("mode", "0644"), 8))
        elif kind == "dir":
            os.makedirs(p, exist_ok=True)
            dir_modes[rel] = int(e.get("mode", "0755"), 8)
        elif kind == "symlink":
            os.symlink(e["target"], p)
        elif kind == "targz":
            with open(p, "wb") as f:
                f.write(make_targz(e.get("entries", [])))
            os.chmod(p, int(e.get("mode", "0644"), 8))
        else:
            raise ValueError("unknown context kind %r" % kind)
    for d in implied:
        dir_modes.setdefault(d, 0o755)
    # deepest first, so a 0700 parent does not matter while its children are set
    for d in sorted(dir_modes, key=lambda s: -s.count("/")):
        os.chmod(os.path.join(ctx, d), dir_modes[d])
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    os.chmod(os.path.join(ctx, "Dockerfile"), 0o644)


def build(ctx, tag, case):
    args = ["docker", "build", "--no-cache", "--force-rm", "-t", tag]
    for k, v in case.get("build_args", {}).items():
        args += ["--build-arg", "%s=%s" % (k, v)]
    if case.get("target"):
        args += ["--target", case["target"]]
    args.append(ctx)
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    if case.get("builder") == "buildkit":
        args[0:2] = [buildkit_docker(), "build", "--progress=plain"]
        env["DOCKER_BUILDKIT"] = "1"
    r = run(args, env=env)
    return r.returncode, r.stdout + r.stderr


def buildkit_docker():
    """A docker CLI that can build with BuildKit: one with buildx, else Debian's docker.io
    20.10 CLI (/usr/bin/docker), which drives the daemon's built-in BuildKit by itself."""
    override = os.environ.get("ORACLE_BUILDKIT_DOCKER")
    if override:
        return override
    if run(["docker", "buildx", "version"]).returncode == 0:
        return "docker"
    return "/usr/bin/docker"


def error_text(out):
    """What Docker said about the failure: its output less the progress lines that only
    echo the Dockerfile (`Step N/M : ...`, `#N [stage] INSTRUCTION`), so that an error
    substring cannot match the instruction's own text."""
    keep = []
    for line in out.splitlines():
        s = line.strip()
        if s.startswith(("Step ", "Sending build context", "--->")):
            continue
        if re.match(r"#\d+ \[", s) or s.startswith("> ["):
            continue
        keep.append(line)
    return "\n".join(keep)


def load_image(image, workdir):
    """(config json, union of the layers as {"/path": info})."""
    path = os.path.join(workdir, "save.tar")
    docker_ok(["save", "-o", path, image])
    union = {}
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        config = json.load(outer.extractfile(manifest["Config"]))
        for layer in manifest["Layers"]:
            data = outer.extractfile(layer).read()
            apply_layer(union, tarfile.open(fileobj=io.BytesIO(data)))
    os.unlink(path)
    return config, union


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    name = "" if name == "." else name.strip("/")
    return "/" + name


def remove(union, path):
    for p in [p for p in union if p == path or p.startswith(path.rstrip("/") + "/")]:
        del union[p]


def apply_layer(union, t):
    members = t.getmembers()
    for m in members:  # whiteouts apply to the layers below
        base = os.path.basename(norm(m.name))
        parent = os.path.dirname(norm(m.name))
        if base == ".wh..wh..opq":
            for p in [p for p in union if p.startswith(parent.rstrip("/") + "/")]:
                del union[p]
        elif base.startswith(".wh."):
            remove(union, os.path.join(parent, base[4:]))
    for m in members:
        path = norm(m.name)
        if os.path.basename(path).startswith(".wh."):
            continue
        info = {"mode": m.mode & 0o7777, "owner": "%d:%d" % (m.uid, m.gid)}
        if m.isdir():
            info["kind"] = "dir"
        elif m.issym():
            info["kind"] = "symlink"
            info["target"] = m.linkname
        elif m.islnk():
            src = union.get(norm(m.linkname), {})
            info["kind"] = "file"
            info["content"] = src.get("content", b"")
        elif m.isfile():
            info["kind"] = "file"
            info["content"] = t.extractfile(m).read()
        else:
            info["kind"] = {tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
                            tarfile.FIFOTYPE: "fifo"}.get(m.type, "other")
        if path in union and not (union[path]["kind"] == "dir" and info["kind"] == "dir"):
            remove(union, path)
        union[path] = info


def describe(info):
    s = "%-7s %04o %s" % (info["kind"], info["mode"], info["owner"])
    if info["kind"] == "symlink":
        s += " -> " + info["target"]
    if info["kind"] == "file":
        c = info["content"]
        s += " %d bytes" % len(c)
        if len(c) <= 200:
            try:
                s += " " + json.dumps(c.decode())
            except UnicodeDecodeError:
                pass
    return s


def same(a, b):
    return a == b


# ---------------------------------------------------------------- comparison of Config

CASE_KEYS = {"reference", "note", "needs_run", "builder", "build_args", "target", "parent",
             "dockerfile", "context", "expect", "error"}
SET_KEYS = {"ExposedPorts", "Volumes"}  # Docker's maps of {} -> the list of their keys
HEALTH_NUMS = ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def observed_value(cfg, key):
    v = cfg.get(key)
    if key in SET_KEYS:
        return sorted((v or {}).keys())
    if key == "Healthcheck":
        if not v:
            return None
        h = {"Test": v.get("Test") or []}
        for n in HEALTH_NUMS:
            h[n] = v.get(n) or 0
        return h
    if key in ("Cmd", "Entrypoint", "OnBuild", "Shell", "Env"):
        return v or []
    if key == "Labels":
        return v or {}
    return v if v is not None else ""


def expected_value(key, v):
    if key in SET_KEYS:
        return sorted(v)
    if key == "Healthcheck":
        h = {"Test": v.get("Test") or []}
        for n in HEALTH_NUMS:
            h[n] = v.get(n) or 0
        return h
    return v


def check_case(path, show, keep):
    name = os.path.basename(path)[:-5]
    with open(path, "rb") as f:
        case = tomllib.load(f)
    unknown = set(case) - CASE_KEYS
    if unknown or "reference" not in case or "dockerfile" not in case:
        return ["malformed case: needs reference and dockerfile; unknown keys %s" % sorted(unknown)]
    if ("error" in case) == bool(case.get("expect")):
        return ["malformed case: exactly one of error and expect"]
    tag = "weftcase-" + name.split("-")[0]
    work = tempfile.mkdtemp(prefix="weftcase-%s." % name.split("-")[0])
    problems = []
    before = set(docker_ok(["images", "-aq", "--no-trunc"]).split())
    try:
        if "parent" in case:
            pctx = os.path.join(work, "parent-context")
            materialize(case, case["parent"], pctx)
            rc, out = build(pctx, "parent:latest", {})
            if rc != 0:
                return ["parent build failed:\n" + out]
        ctx = os.path.join(work, "context")
        materialize(case, case["dockerfile"], ctx)
        rc, out = build(ctx, tag, case)
        if "error" in case:
            if rc == 0:
                problems.append("build succeeded, expected an error containing %r" % case["error"])
            elif case["error"].lower() not in error_text(out).lower():
                problems.append("error %r not in Docker's output:\n%s" % (case["error"], out.strip()))
            if show:
                print("  --- docker output (exit %d)\n%s" % (rc, indent(out.strip())))
            return problems
        if rc != 0:
            return ["build failed:\n" + out]
        inspect = json.loads(docker_ok(["image", "inspect", tag]))[0]
        cfg = inspect.get("Config") or {}
        config, union = load_image(tag, work)
        exp = case.get("expect", {})
        for key, want in exp.get("config", {}).items():
            got = observed_value(cfg, key)
            if got != expected_value(key, want):
                problems.append("Config.%s: expected %s, Docker has %s" % (key, json.dumps(want), json.dumps(got)))
        for e in exp.get("path", []):
            p = e["path"]
            info = union.get(p)
            kind = e.get("kind")
            if kind == "absent":
                if info is not None:
                    problems.append("%s: expected absent, Docker has %s" % (p, describe(info)))
                continue
            if info is None:
                problems.append("%s: expected %s, absent in Docker's image" % (p, kind or "present"))
                continue
            if kind and info["kind"] != kind:
                problems.append("%s: expected kind %s, Docker has %s" % (p, kind, describe(info)))
                continue
            if "content" in e and info.get("content") != e["content"].encode():
                problems.append("%s: content %r, Docker has %r" % (p, e["content"], info.get("content")))
            if "mode" in e and info["mode"] != int(e["mode"], 8):
                problems.append("%s: mode %s, Docker has %04o" % (p, e["mode"], info["mode"]))
            if "owner" in e and info["owner"] != e["owner"]:
                problems.append("%s: owner %s, Docker has %s" % (p, e["owner"], info["owner"]))
            if "target" in e and info.get("target") != e["target"]:
                problems.append("%s: target %s, Docker has %s" % (p, e["target"], info.get("target")))
        hist = exp.get("history")
        if hist:
            base_cfg, _ = load_image(hist.get("from", BASE), work)
            added = config.get("history", [])[len(base_cfg.get("history", [])):]
            if "added" in hist and len(added) != hist["added"]:
                problems.append("history: %d entries added, expected %d" % (len(added), hist["added"]))
            layers = len(config["rootfs"]["diff_ids"]) - len(base_cfg["rootfs"]["diff_ids"])
            nonempty = sum(1 for h in added if not h.get("empty_layer"))
            if nonempty != layers:
                problems.append("history: %d non-empty entries for %d new layers" % (nonempty, layers))
            if "added_layers" in hist and layers != hist["added_layers"]:
                problems.append("history: %d layers added, expected %d" % (layers, hist["added_layers"]))
            if hist.get("created"):
                if not config.get("created") or not all(h.get("created") for h in added):
                    problems.append("history: created missing on the image or an entry")
        if show:
            print("  --- Config\n" + indent(json.dumps(cfg, indent=None, sort_keys=True)))
            _, base_union = load_image(BASE, work)
            print("  --- paths that differ from %s" % BASE)
            for p in sorted(union):
                if p not in base_union or not same(union[p], base_union[p]):
                    print("    %-40s %s" % (p, describe(union[p])))
            for p in sorted(base_union):
                if p not in union:
                    print("    %-40s absent" % p)
            print("  --- history")
            for h in config.get("history", []):
                print("    %s%s" % ("(empty) " if h.get("empty_layer") else "", h.get("created_by", "")[:100]))
        return problems
    finally:
        if not keep:
            run(["docker", "rmi", tag])
            if "parent" in case:
                run(["docker", "rmi", "parent:latest"])
            # the images this case made: new since it started, and untagged (intermediate
            # stages) now that its two tags are gone; children go before their parents
            for _ in range(10):
                new = set(run(["docker", "images", "-aq", "--no-trunc"]).stdout.split()) - before
                ours = [i for i in new if run(["docker", "image", "inspect", "-f",
                                               "{{len .RepoTags}}", i]).stdout.strip() == "0"]
                if not ours:
                    break
                for i in ours:
                    run(["docker", "rmi", i])
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("  kept %s and %s" % (tag, work))


def indent(s):
    return "\n".join("    " + line for line in s.splitlines())


def main(argv):
    show = "--show" in argv
    keep = "--keep" in argv
    files = [a for a in argv if not a.startswith("--")]
    if not files:
        print(__doc__ or "usage: bash oracle.sh [--show] [--keep] CASE.toml...", file=sys.stderr)
        return 2
    ensure_base()
    failed = 0
    for path in files:
        try:
            problems = check_case(path, show, keep)
        except Exception as e:  # a broken case file or docker failing counts as a mismatch
            problems = ["oracle error: %s: %s" % (type(e).__name__, e)]
        if problems:
            failed += 1
            print("FAIL %s" % path)
            for p in problems:
                print(indent(p))
        else:
            print("ok   %s" % path)
        sys.stdout.flush()
    print("%d passed, %d failed" % (len(files) - failed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
PYTHON
