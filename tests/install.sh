#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: orch with its test extras, and the real
# agent CLIs whose argv and output the tests check (npm: claude, codex, gemini, opencode; PyPI:
# aider, kept in its own venv because it pins numpy/pydantic/litellm). Each is skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]'

npm_pkgs=()
command -v claude >/dev/null 2>&1 || npm_pkgs+=("@anthropic-ai/claude-code")
command -v codex >/dev/null 2>&1 || npm_pkgs+=("@openai/codex")
command -v gemini >/dev/null 2>&1 || npm_pkgs+=("@google/gemini-cli")
command -v opencode >/dev/null 2>&1 || npm_pkgs+=("opencode-ai")
if [ ${#npm_pkgs[@]} -gt 0 ]; then
  npm=(npm)
  if ! command -v npm >/dev/null 2>&1; then
    # Some Node.js packages ship npm inside node's lib/node_modules without putting it on PATH.
    npm_cli="$(dirname "$(readlink -f "$(command -v node)")")/../lib/node_modules/npm/bin/npm-cli.js"
    [ -f "$npm_cli" ] || { echo "tests/install.sh: npm is needed for ${npm_pkgs[*]}" >&2; exit 1; }
    npm=(node "$npm_cli")
  fi
  "${npm[@]}" install -g --no-fund --no-audit --loglevel=error "${npm_pkgs[@]}"
fi

if ! command -v aider >/dev/null 2>&1; then
  venv="${XDG_DATA_HOME:-$HOME/.local/share}/orch/aider-venv"
  python -m venv "$venv"
  "$venv/bin/python" -m pip install -q aider-chat
  bindir=/usr/local/bin
  [ -w "$bindir" ] || { bindir="$HOME/.local/bin"; mkdir -p "$bindir"; }
  ln -sf "$venv/bin/aider" "$bindir/aider"
  command -v aider >/dev/null 2>&1 || echo "tests/install.sh: aider installed in $bindir; put it on PATH" >&2
fi
