#!/usr/bin/env bash
# Builds the Conclave enclave image (EIF) of one git revision and writes its
# measurements:
#
#   eif/out/conclave.eif          the image, for `nitro-cli run-enclave`
#   eif/out/pcrs.json             PCR0, PCR1, PCR2 (PCR8 when signed) and what
#                                 they were built from, for the KMS key policy
#                                 (deploy/nitro/render-key-policy.sh), for
#                                 `conclave attest verify --pcr` and for audit
#   eif/out/expected_pcrs.toml    the same PCRs as a [nitro.expected_pcrs]
#                                 table for an enclave.toml
#
# Usage: eif/build.sh --config-dir DIR [--rev REV]
#                     [--signing-certificate CERT.pem --private-key KEY]
#
#   --config-dir DIR   holds enclave.toml (mode "nitro") and roster.json; both
#                      are baked into the image, so PCR2 measures them
#   --rev REV          the revision to build (default HEAD). The image is built
#                      from `git archive REV`: uncommitted changes are never in it
#   --signing-certificate, --private-key
#                      sign the EIF (nitro-cli's options of the same names; the
#                      key is a PEM file or a KMS key ARN), which adds PCR8
#
# Needs docker (with BuildKit), nitro-cli (aws-nitro-enclaves-cli and its
# -devel package, whose kernel and init blobs make PCR1), git and python3.
# Runs on the parent instance or any x86_64 Linux with nitro-cli installed.
set -euo pipefail

die() { echo "eif/build.sh: $*" >&2; exit 1; }
usage() { sed -n '/^# Usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' | sed '$d' >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/eif/out"
rev=HEAD
config_dir=
signing_certificate=
private_key=

while [ $# -gt 0 ]; do
  case "$1" in
    --config-dir) [ $# -ge 2 ] || usage; config_dir=$2; shift 2 ;;
    --rev) [ $# -ge 2 ] || usage; rev=$2; shift 2 ;;
    --signing-certificate) [ $# -ge 2 ] || usage; signing_certificate=$2; shift 2 ;;
    --private-key) [ $# -ge 2 ] || usage; private_key=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "eif/build.sh: unknown argument: $1" >&2; usage ;;
  esac
done

# Tools first: a half-built image is worse than a clear refusal.
command -v docker >/dev/null || die "docker is not installed (on Amazon Linux 2023: dnf install docker; systemctl start docker)"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable by $(id -un) (start it, or add the user to the docker group)"
command -v nitro-cli >/dev/null || die "nitro-cli is not installed (on Amazon Linux 2023: dnf install aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel)"
command -v git >/dev/null || die "git is not installed"
command -v python3 >/dev/null || die "python3 is not installed (it writes pcrs.json)"

[ -n "$config_dir" ] || die "--config-dir is required: the directory holding this deployment's enclave.toml and roster.json"
[ -f "$config_dir/enclave.toml" ] || die "$config_dir/enclave.toml not found"
[ -f "$config_dir/roster.json" ] || die "$config_dir/roster.json not found"
grep -Eq '^[[:space:]]*mode[[:space:]]*=[[:space:]]*"nitro"' "$config_dir/enclave.toml" \
  || die "$config_dir/enclave.toml does not say mode = \"nitro\"; only nitro mode runs in an enclave"
if grep -Eq '^[[:space:]]*allow_debug_enclaves[[:space:]]*=[[:space:]]*true' "$config_dir/enclave.toml"; then
  echo "eif/build.sh: WARNING: $config_dir/enclave.toml sets allow_debug_enclaves = true: this image admits debug-mode peers, whose memory their parent instance can read. Never for production." >&2
fi
if [ -n "$signing_certificate" ] || [ -n "$private_key" ]; then
  [ -n "$signing_certificate" ] && [ -n "$private_key" ] || die "--signing-certificate and --private-key go together"
  [ -f "$signing_certificate" ] || die "$signing_certificate not found"
fi

cd "$repo"
commit=$(git rev-parse --verify --quiet "$rev^{commit}") || die "$rev is not a commit of this repository"
short=${commit:0:12}
image="conclave-enclave:$short"
# The commit's own time: the same for everyone who builds this revision.
source_date_epoch=$(git log -1 --format=%ct "$commit")
if [ "$rev" = HEAD ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "eif/build.sh: note: the work tree has uncommitted changes; they are not in the image (it is built from $short)" >&2
fi

# The recipe of the revision being built, not of the work tree: the
# Dockerfile is part of what the PCRs stand for.
dockerfile=$(git show "$commit:eif/Dockerfile") || die "$short has no eif/Dockerfile"
# Every FROM names an image by digest, or is `scratch`, or a stage of this
# file; a tag alone would let the measured bytes change under the same
# revision.
stages=$(printf '%s\n' "$dockerfile" | awk 'toupper($1) == "FROM" { for (i = 2; i < NF; i++) if (toupper($i) == "AS") print $(i + 1) }')
base_images=()
while read -r from_image; do
  [ -n "$from_image" ] || continue
  if [ "$from_image" = scratch ] || printf '%s\n' "$stages" | grep -qxF "$from_image"; then
    continue
  fi
  case "$from_image" in
    *@sha256:????????????????????????????????????????????????????????????????) base_images+=("$from_image") ;;
    *) die "eif/Dockerfile: FROM $from_image is not pinned by digest (name:tag@sha256:<64 hex>); see eif/README.md, \"Pinning the base image\"" ;;
  esac
done < <(printf '%s\n' "$dockerfile" | awk 'toupper($1) == "FROM" { for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; break } }')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/conf"
git archive "$commit" | tar -x -C "$work/src"
cp "$config_dir/enclave.toml" "$config_dir/roster.json" "$work/conf/"

echo "eif/build.sh: building $image (git $commit, SOURCE_DATE_EPOCH=$source_date_epoch)" >&2
# linux/amd64: the enclave runs on the parent's x86_64 cores, whatever
# machine builds it.
DOCKER_BUILDKIT=1 docker build \
  --platform linux/amd64 \
  --build-arg "SOURCE_DATE_EPOCH=$source_date_epoch" \
  --build-arg CONF_DIR=conf \
  --file "$work/src/eif/Dockerfile" \
  --tag "$image" \
  "$work"

mkdir -p "$out"
sign_args=()
if [ -n "$signing_certificate" ]; then
  sign_args=(--signing-certificate "$signing_certificate" --private-key "$private_key")
fi
echo "eif/build.sh: nitro-cli build-enclave --docker-uri $image" >&2
# nitro-cli prints its progress on stderr and the measurements as JSON on stdout.
nitro-cli build-enclave --docker-uri "$image" --output-file "$out/conclave.eif" ${sign_args[@]+"${sign_args[@]}"} > "$work/measurements.json" \
  || die "nitro-cli build-enclave failed (its log: /var/log/nitro_enclaves/)"

nitro_cli_version=$(nitro-cli --version 2>/dev/null | head -n 1 || true)
blobs=${NITRO_CLI_BLOBS:-/usr/share/nitro_enclaves/blobs}

python3 - "$work/measurements.json" "$out" "$image" "$commit" "$source_date_epoch" \
  "$nitro_cli_version" "$blobs" "${signing_certificate:+signed}" ${base_images[@]+"${base_images[@]}"} <<'PY'
import hashlib, json, os, re, sys

measurements_file, out, image, commit, sde, nitro_cli, blobs, signed, *base_images = sys.argv[1:]
with open(measurements_file) as f:
    measured = json.load(f)["Measurements"]

pcrs = {}
for index in ("0", "1", "2", "8"):
    value = measured.get("PCR" + index)
    if value is None:
        continue
    value = value.lower()
    # SHA-384: 48 bytes. All zeros would be a debug-mode measurement, which
    # nitro-cli never reports for a build; refuse rather than publish it.
    if not re.fullmatch(r"[0-9a-f]{96}", value) or set(value) == {"0"}:
        sys.exit(f"eif/build.sh: nitro-cli reported PCR{index} = {value!r}, not a SHA-384 measurement")
    pcrs[index] = value
for required in ("0", "1", "2"):
    if required not in pcrs:
        sys.exit(f"eif/build.sh: nitro-cli reported no PCR{required}")
if bool(signed) != ("8" in pcrs):
    sys.exit("eif/build.sh: PCR8 must be present exactly when the image is signed")

# PCR1 is the kernel and init that nitro-cli ships as blobs; recording their
# hashes lets someone reproducing the build see at once whether theirs match.
blob_hashes = {}
if os.path.isdir(blobs):
    for name in sorted(os.listdir(blobs)):
        path = os.path.join(blobs, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                blob_hashes[name] = hashlib.sha256(f.read()).hexdigest()

manifest = {
    "image": image,
    "git_rev": commit,
    "pcrs": pcrs,
    "built_from": {
        "source_date_epoch": int(sde),
        "base_images": base_images,
        "platform": "linux/amd64",
        "nitro_cli": nitro_cli,
        "nitro_cli_blobs_sha256": blob_hashes,
    },
}
with open(os.path.join(out, "pcrs.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")

lines = [
    f"# Measurements of {image} (git {commit}), from eif/out/pcrs.json.",
    "# These admit THIS image as a peer. They cannot go into the enclave.toml",
    "# baked into this same image (that would change its PCR2 and PCR0): see",
    "# eif/README.md, \"What the measurements cover\". During a rolling",
    "# upgrade, list the old and the new image's values side by side.",
    "[nitro.expected_pcrs]",
]
lines += [f'{index} = ["{value}"]' for index, value in pcrs.items()]
with open(os.path.join(out, "expected_pcrs.toml"), "w") as f:
    f.write("\n".join(lines) + "\n")

for index, value in pcrs.items():
    print(f"PCR{index} {value}")
PY

echo "eif/build.sh: wrote $out/conclave.eif, $out/pcrs.json, $out/expected_pcrs.toml" >&2
