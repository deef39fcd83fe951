"""Render every role's meta/argument_specs.yml as docs/roles.md, so the reference never drifts.

    python3 scripts/role_docs.py            # rewrite docs/roles.md
    python3 scripts/role_docs.py --check    # exit 1 when docs/roles.md is out of date (make lint)
"""
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "docs", "roles.md")


def _text(value):
    if isinstance(value, list):
        value = " ".join(value)
    return " ".join(str(value).split()).replace("|", "\\|")


def render():
    out = ["# Role reference", "",
           "Generated from each role's `meta/argument_specs.yml` by `scripts/role_docs.py`; do not edit by hand.", ""]
    for role in sorted(os.listdir(os.path.join(ROOT, "roles"))):
        path = os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml")
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            spec = yaml.safe_load(handle)["argument_specs"]["main"]
        out += [f"## xdplb.katran.{role}", "", _text(spec.get("short_description", "")), ""]
        out += [_text(spec.get("description", "")), "", "| variable | type | default | description |",
                "| --- | --- | --- | --- |"]
        for name, opt in spec.get("options", {}).items():
            kind = opt.get("type", "str")
            if opt.get("elements"):
                kind += f" of {opt['elements']}"
            if opt.get("choices"):
                kind += " (" + ", ".join(str(c) for c in opt["choices"]) + ")"
            default = "required" if opt.get("required") else f"`{opt['default']!r}`" if "default" in opt else ""
            out.append(f"| `{name}` | {kind} | {default} | {_text(opt.get('description', ''))} |")
        out.append("")
    return "\n".join(out)


def main():
    text = render()
    if "--check" in sys.argv:
        with open(TARGET) as handle:
            if handle.read() != text:
                print("docs/roles.md is out of date: run python3 scripts/role_docs.py", file=sys.stderr)
                return 1
        return 0
    with open(TARGET, "w") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
