#!/usr/bin/env bash
# Checks the infrastructure code offline: npm ci, type check, jest assertions on the synthesized
# template, `cdk synth`, then cfn-lint and checkov on the template (suppressions, each with its
# reason, stand in the template's Metadata next to the resource they excuse).
set -euo pipefail
cd "$(dirname "$0")/cdk"

say() { printf '[cdk] %s\n' "$*" >&2; }
export CDK_DISABLE_CLI_TELEMETRY=true

# aws-cdk-lib needs Node.js 20 or later (Debian bookworm's nodejs is 18: use NodeSource or nvm).
command -v npm >/dev/null 2>&1 || { echo "[cdk] error: Node.js 20+ with npm is needed" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || { echo "[cdk] error: Node.js $node_major found, aws-cdk-lib needs 20+" >&2; exit 1; }
# cfn-lint and checkov come from PyPI when missing (pinned majors: their rule sets change).
missing=()
command -v cfn-lint >/dev/null 2>&1 || missing+=('cfn-lint>=1,<2')
command -v checkov >/dev/null 2>&1 || missing+=('checkov>=3,<4')
if ((${#missing[@]})); then
  say "pip install ${missing[*]}"
  python3 -m pip install --quiet "${missing[@]}"
fi

say "npm ci"
npm ci --no-audit --no-fund --loglevel=error
say "tsc --noEmit"
npx tsc --noEmit
say "jest"
npx jest --ci
say "cdk synth (offline, account- and region-agnostic)"
rm -rf cdk.out
npx cdk synth --quiet --no-notices --no-version-reporting -o cdk.out >/dev/null
template=cdk.out/KvsStream.template.json
[[ -s $template ]] || { echo "[cdk] error: no $template" >&2; exit 1; }
say "cfn-lint $template"
cfn-lint "$template"
say "checkov $template"
# --skip-download: no network call for the guidelines catalogue; the checks are local.
checkov --file "$template" --framework cloudformation --quiet --compact --skip-download
say "ok"
