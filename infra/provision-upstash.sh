#!/usr/bin/env bash
# Provisions what slotscribe's cluster mode reads (an Upstash Redis database and the account's
# QStash credentials) through the Upstash developer API, and stores them as secrets on Fly or
# Railway. Safe to re-run: an existing database with the same name is reused, not duplicated.
#
#   UPSTASH_EMAIL=you@example.com UPSTASH_API_KEY=... \
#     infra/provision-upstash.sh --target fly --app my-slotscribe [--dry-run]
#
# Secret values never reach the command line of a child process (curl reads credentials from its
# stdin, `fly secrets import` reads the values from its stdin) and are never printed.
# Exception: the Railway CLI only takes values as arguments (--set KEY=VALUE), so with
# --target railway they are briefly visible to other users of this machine in the process list.
set -euo pipefail

readonly SCRIPT=${0##*/}
readonly SECRET_NAMES=(UPSTASH_REDIS_REST_URL UPSTASH_REDIS_REST_TOKEN QSTASH_URL QSTASH_TOKEN QSTASH_CURRENT_SIGNING_KEY QSTASH_NEXT_SIGNING_KEY)

usage() {
  cat <<EOF
usage: $SCRIPT --target fly|railway [options]

Creates (or reuses) an Upstash Redis database, reads its REST URL and token, reads the QStash
token and signing keys, and sets them as secrets:
  ${SECRET_NAMES[*]}

options:
  --target fly|railway   where to store the secrets (required)
  --app NAME             Fly app (default: the app in ./fly.toml)
  --service NAME         Railway service (default: the linked one)
  --environment NAME     Railway environment (default: the linked one)
  --name NAME            Redis database name (default: slotscribe)
  --region REGION        Redis primary region (default: us-east-1; pick the one nearest your machines)
  --qstash-url URL       QStash endpoint the service uses (default: https://qstash.upstash.io)
  --stage                set the secrets without restarting (fly --stage, railway --skip-deploys)
  --dry-run              print the requests and commands it would run, and run none of them
  -h, --help             this text

environment:
  UPSTASH_EMAIL, UPSTASH_API_KEY   Upstash account and developer API key (console: Account > Management API)
  UPSTASH_API_URL                  developer API base (default https://api.upstash.com), for tests
EOF
}

die() {
  echo "$SCRIPT: $*" >&2
  exit 2
}

fail() {
  echo "$SCRIPT: $*" >&2
  exit 1
}

target="" app="" service="" environment="" name="slotscribe" region="us-east-1"
qstash_url="https://qstash.upstash.io" stage=false dry_run=false
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=${2:-}; shift 2 || die "--target needs a value" ;;
    --app) app=${2:-}; shift 2 || die "--app needs a value" ;;
    --service) service=${2:-}; shift 2 || die "--service needs a value" ;;
    --environment) environment=${2:-}; shift 2 || die "--environment needs a value" ;;
    --name) name=${2:-}; shift 2 || die "--name needs a value" ;;
    --region) region=${2:-}; shift 2 || die "--region needs a value" ;;
    --qstash-url) qstash_url=${2:-}; shift 2 || die "--qstash-url needs a value" ;;
    --stage) stage=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

case "$target" in
  fly | railway) ;;
  "") usage >&2; die "--target is required (fly or railway)" ;;
  *) die "--target must be fly or railway, not \"$target\"" ;;
esac
[ "$target" = fly ] || [ -z "$app" ] || die "--app is for --target fly; Railway takes --service and --environment"
[ "$target" = railway ] || [ -z "$service$environment" ] || die "--service and --environment are for --target railway"
[[ "$name" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "--name must be 1-64 letters, digits, - or _"
[[ "$region" =~ ^[a-z]{2}-[a-z]+-[0-9]$ ]] || die "--region looks wrong: \"$region\" (e.g. us-east-1, eu-central-1)"
[[ "$qstash_url" =~ ^https?://[^[:space:]]+$ ]] || die "--qstash-url must be an http(s) URL"
qstash_url=${qstash_url%/}
[ -n "${UPSTASH_EMAIL:-}" ] || die "set UPSTASH_EMAIL to your Upstash account's email"
[ -n "${UPSTASH_API_KEY:-}" ] || die "set UPSTASH_API_KEY to an Upstash developer API key"
[[ "$UPSTASH_EMAIL" == *@* ]] || die "UPSTASH_EMAIL does not look like an email address"
api_url=${UPSTASH_API_URL:-https://api.upstash.com}
api_url=${api_url%/}

if ! $dry_run; then
  for tool in curl node; do
    command -v "$tool" >/dev/null || fail "$tool is required (node parses the API's JSON)"
  done
  if [ "$target" = fly ]; then
    fly_cli=$(command -v fly || command -v flyctl || true)
    [ -n "$fly_cli" ] || fail "the Fly CLI (fly or flyctl) is not on PATH"
  else
    command -v railway >/dev/null || fail "the Railway CLI (railway) is not on PATH"
  fi
fi

# Quotes a value for a curl config file ("..." with backslash escapes).
curl_quote() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# api METHOD URL AUTH [BODY]: AUTH is "basic" (Upstash account) or "bearer:<token>". Prints the
# response body; fails with the status on anything but 2xx. Credentials travel in curl's config on
# stdin, never in its arguments.
api() {
  local method=$1 url=$2 auth=$3 body=${4:-} response status
  if $dry_run; then
    local shown="basic auth $UPSTASH_EMAIL:***"
    [ "$auth" = basic ] || shown="bearer QSTASH_TOKEN"
    printf '[dry-run] %-4s %s  (%s)%s\n' "$method" "$url" "$shown" "${body:+  body: $body}"
    return 0
  fi
  response=$(
    {
      printf 'url = %s\n' "$(curl_quote "$url")"
      printf 'request = %s\n' "$(curl_quote "$method")"
      if [ "$auth" = basic ]; then
        printf 'user = %s\n' "$(curl_quote "$UPSTASH_EMAIL:$UPSTASH_API_KEY")"
      else
        printf 'header = %s\n' "$(curl_quote "Authorization: Bearer ${auth#bearer:}")"
      fi
      if [ -n "$body" ]; then
        printf 'header = "Content-Type: application/json"\n'
        printf 'data = %s\n' "$(curl_quote "$body")"
      fi
    } | curl --silent --show-error --max-time 60 --write-out '\n%{http_code}' --config -
  ) || fail "$method $url: no answer (curl failed)"
  status=${response##*$'\n'}
  response=${response%$'\n'*}
  if [[ ! "$status" =~ ^2 ]]; then
    # Error bodies carry a message, not credentials; cut them short anyway.
    fail "$method $url answered HTTP $status: ${response:0:300}"
  fi
  printf '%s' "$response"
}

# json FIELD [MATCH_KEY MATCH_VALUE]: reads JSON on stdin and prints one field, or with a match,
# the field of the first array element whose MATCH_KEY equals MATCH_VALUE (empty if none).
json() {
  # shellcheck disable=SC2016 # JavaScript source: the ${...} in it are template literals, not shell.
  node -e '
    const [field, key, value] = process.argv.slice(1);
    let text = "";
    process.stdin.on("data", (d) => (text += d)).on("end", () => {
      let data;
      try { data = JSON.parse(text); } catch { console.error("not JSON"); process.exit(3); }
      if (key !== undefined) {
        const found = Array.isArray(data) ? data.find((item) => item && item[key] === value) : undefined;
        process.stdout.write(found && found[field] != null ? String(found[field]) : "");
        return;
      }
      if (data == null || data[field] == null || data[field] === "") { console.error(`no "${field}" in the answer`); process.exit(3); }
      process.stdout.write(String(data[field]));
    });
  ' "$@"
}

echo "$SCRIPT: Redis database \"$name\" (primary region $region), QStash at $qstash_url, secrets to $target" >&2

# 1. Redis: reuse a database of that name, else create one (global type; "regional" is deprecated).
create_body=$(printf '{"name":"%s","region":"global","primary_region":"%s","tls":true}' "$name" "$region")
if $dry_run; then
  api GET "$api_url/v2/redis/databases" basic
  echo "[dry-run]      reuse the database named \"$name\" if listed (GET $api_url/v2/redis/database/<id>), else:"
  api POST "$api_url/v2/redis/database" basic "$create_body"
  echo "[dry-run]      UPSTASH_REDIS_REST_URL = https://<endpoint>, UPSTASH_REDIS_REST_TOKEN = <rest_token>"
else
  # Captured before parsing: a failed request must stop here with its own message, not as bad JSON.
  listing=$(api GET "$api_url/v2/redis/databases" basic)
  db_id=$(json database_id database_name "$name" <<<"$listing") || fail "the database list is not what the API documents"
  if [ -n "$db_id" ]; then
    echo "$SCRIPT: reusing Redis database \"$name\" ($db_id)" >&2
    database=$(api GET "$api_url/v2/redis/database/$db_id" basic)
  else
    echo "$SCRIPT: creating Redis database \"$name\"" >&2
    database=$(api POST "$api_url/v2/redis/database" basic "$create_body")
  fi
  redis_endpoint=$(json endpoint <<<"$database") || fail "the database answer has no endpoint"
  redis_token=$(json rest_token <<<"$database") || fail "the database answer has no rest_token"
  redis_url="https://${redis_endpoint#https://}"
fi

# 2. QStash: the account's token, then the signing keys the service verifies deliveries with.
if $dry_run; then
  api GET "$api_url/v2/qstash/user" basic
  echo "[dry-run]      QSTASH_TOKEN = <token>"
  api GET "$qstash_url/v2/keys" bearer
  echo "[dry-run]      QSTASH_CURRENT_SIGNING_KEY = <current>, QSTASH_NEXT_SIGNING_KEY = <next>"
else
  qstash_user=$(api GET "$api_url/v2/qstash/user" basic)
  qstash_token=$(json token <<<"$qstash_user") || fail "the QStash answer has no token"
  keys=$(api GET "$qstash_url/v2/keys" "bearer:$qstash_token")
  current_key=$(json current <<<"$keys") || fail "the signing keys answer has no current key"
  next_key=$(json next <<<"$keys") || fail "the signing keys answer has no next key"
fi

# 3. Secrets.
secret_lines() {
  printf '%s=%s\n' \
    UPSTASH_REDIS_REST_URL "$redis_url" \
    UPSTASH_REDIS_REST_TOKEN "$redis_token" \
    QSTASH_URL "$qstash_url" \
    QSTASH_TOKEN "$qstash_token" \
    QSTASH_CURRENT_SIGNING_KEY "$current_key" \
    QSTASH_NEXT_SIGNING_KEY "$next_key"
}

if [ "$target" = fly ]; then
  args=(secrets import)
  [ -z "$app" ] || args+=(--app "$app")
  ! $stage || args+=(--stage)
  if $dry_run; then
    echo "[dry-run] fly ${args[*]}  (stdin: ${SECRET_NAMES[*]/%/=<value>})"
  else
    secret_lines | "$fly_cli" "${args[@]}" || fail "fly secrets import failed"
  fi
else
  args=(variables)
  [ -z "$service" ] || args+=(--service "$service")
  [ -z "$environment" ] || args+=(--environment "$environment")
  ! $stage || args+=(--skip-deploys)
  if $dry_run; then
    echo "[dry-run] railway ${args[*]}$(printf ' --set %s=<value>' "${SECRET_NAMES[@]}")"
  else
    while IFS= read -r line; do args+=(--set "$line"); done < <(secret_lines)
    railway "${args[@]}" >/dev/null || fail "railway variables --set failed"
  fi
fi

if $dry_run; then
  echo "$SCRIPT: dry run, nothing was created or set" >&2
else
  echo "$SCRIPT: set ${SECRET_NAMES[*]} on $target" >&2
fi
