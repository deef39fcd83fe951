#!/usr/bin/env bash
# Puts the offline get-pip stand-in where the installed ansible-test looks for its cached copy.
set -euo pipefail
venv="${1:?usage: $0 VENV}"
source_file=$(ls "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
version=$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" "$source_file" | head -1)
[[ -n "$version" ]] || { echo "cannot find ansible-test's pip version in $source_file" >&2; exit 1; }
mkdir -p ~/.ansible/test/cache
install -m 0644 "$(dirname "$0")/get_pip_standin.py" ~/.ansible/test/cache/"get_pip_${version//./_}.py"
