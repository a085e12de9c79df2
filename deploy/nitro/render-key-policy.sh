#!/usr/bin/env bash
# Fills deploy/nitro/kms-key-policy.json with real values and prints the key
# policy of one node's KMS key on stdout:
#
#   deploy/nitro/render-key-policy.sh --account 111122223333 \
#       --instance-role conclave-node-1 --node node-1 [--admin-role conclave-kms-admin] \
#       eif/out/pcrs.json [OLD-pcrs.json ...] > policy.json
#
# Each pcrs.json (written by eif/build.sh) becomes one statement that lets
# the node's instance role call Decrypt and GenerateDataKey for an enclave
# showing exactly that image's PCR0, PCR1, PCR2 (and PCR8 when the image is
# signed), and only under the encryption context {"conclave:node": NODE}
# that the signer puts on every call. Give two files during a rolling upgrade (the new image and the
# one it replaces), then render again with the new one alone. One statement
# per image, rather than two values per PCR in one statement, so that no mix
# of two images' PCRs is ever admitted. With no file, the policy admits no
# image: the key's first policy, before any image exists (its ARN goes into
# the enclave.toml that the image is built with).
set -euo pipefail

usage() { sed -n '/^#   deploy/,/policy.json$/p' "$0" | sed 's/^# \{0,3\}//' >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
account=
instance_role=
node=
admin_role=conclave-kms-admin
pcrs_files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --account) [ $# -ge 2 ] || usage; account=$2; shift 2 ;;
    --instance-role) [ $# -ge 2 ] || usage; instance_role=$2; shift 2 ;;
    --admin-role) [ $# -ge 2 ] || usage; admin_role=$2; shift 2 ;;
    --node) [ $# -ge 2 ] || usage; node=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "render-key-policy.sh: unknown option $1" >&2; usage ;;
    *) pcrs_files+=("$1"); shift ;;
  esac
done
[ -n "$account" ] && [ -n "$instance_role" ] && [ -n "$node" ] || usage
if [ ${#pcrs_files[@]} -eq 0 ]; then
  echo "render-key-policy.sh: no pcrs.json given: this policy admits no enclave image, so the node cannot open its shares under it" >&2
fi
command -v python3 >/dev/null || { echo "render-key-policy.sh: python3 is needed" >&2; exit 1; }

python3 - "$here/kms-key-policy.json" "$account" "$instance_role" "$admin_role" "$node" ${pcrs_files[@]+"${pcrs_files[@]}"} <<'PY'
import copy, json, re, sys

template_file, account, instance_role, admin_role, node, *pcrs_files = sys.argv[1:]

def fail(message):
    sys.exit(f"render-key-policy.sh: {message}")

if not re.fullmatch(r"[0-9]{12}", account):
    fail(f"--account {account!r}: an AWS account id is 12 digits")
for flag, role in (("--instance-role", instance_role), ("--admin-role", admin_role)):
    if not re.fullmatch(r"[A-Za-z0-9+=,.@_-]{1,64}", role):
        fail(f"{flag} {role!r}: give the role's name (not its ARN)")
if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", node):
    fail(f"--node {node!r}: the node id of enclave.toml")
if instance_role == admin_role:
    fail("the instance role and the admin role must differ: the role that uses the key must not be able to rewrite its policy")

with open(template_file) as f:
    policy = json.load(f)
statements = policy["Statement"]
(template,) = [s for s in statements if s["Sid"] == "AttestedEnclaveImageGITREV"]
(admin,) = [s for s in statements if s["Sid"] == "KeyAdministrationWithoutUse"]
admin["Principal"]["AWS"] = f"arn:aws:iam::{account}:role/{admin_role}"

images, seen = [], set()
for path in pcrs_files:
    with open(path) as f:
        manifest = json.load(f)
    pcrs, rev = manifest.get("pcrs", {}), manifest.get("git_rev", "")
    if not re.fullmatch(r"[0-9a-f]{40}", rev):
        fail(f"{path}: git_rev {rev!r} is not a commit id")
    for index in ("0", "1", "2"):
        if index not in pcrs:
            fail(f"{path}: PCR{index} is missing; every image is pinned by PCR0, PCR1 and PCR2")
    condition = {}
    for index, value in sorted(pcrs.items()):
        if index not in ("0", "1", "2", "8"):
            fail(f"{path}: PCR{index} says nothing stable about the image; only 0, 1, 2 and 8 belong here")
        if not re.fullmatch(r"[0-9a-f]{96}", value) or set(value) == {"0"}:
            fail(f"{path}: PCR{index} {value!r} is not a SHA-384 measurement of a non-debug image")
        condition[f"kms:RecipientAttestation:PCR{index}"] = value
    sid = "AttestedEnclaveImage" + rev[:12]
    if sid in seen:
        fail(f"{path}: revision {rev[:12]} is given twice")
    seen.add(sid)
    statement = copy.deepcopy(template)
    statement["Sid"] = sid
    statement["Principal"]["AWS"] = f"arn:aws:iam::{account}:role/{instance_role}"
    statement["Condition"] = {"StringEqualsIgnoreCase": condition, "StringEquals": {"kms:EncryptionContext:conclave:node": node}}
    images.append(statement)

at = statements.index(template)
policy["Statement"] = statements[:at] + images + statements[at + 1:]
rendered = json.dumps(policy, indent=2)
if "_HEX" in rendered or "GITREV" in rendered or "NODE_ID" in rendered:
    fail("a placeholder is left in the policy")
print(rendered)
PY
