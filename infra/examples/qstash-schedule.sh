#!/usr/bin/env bash
# Creates a QStash schedule that submits a transcription job to slotscribe on a cron: every run,
# QStash POSTs {"url", "callback_url"} to /v1/jobs, and slotscribe fetches the media, transcribes it
# and POSTs the signed result to the callback. Useful for a recording that is replaced daily (a
# meeting, a radio show, a podcast feed's latest episode behind a stable URL).
#
#   QSTASH_TOKEN=... SLOTSCRIBE_URL=https://my-slotscribe.fly.dev SLOTSCRIBE_API_KEY=... \
#   MEDIA_URL=https://example.com/daily.mp3 CALLBACK_URL=https://example.com/hooks/transcript \
#     infra/examples/qstash-schedule.sh
#
# The API key reaches slotscribe as its Authorization header: QStash strips the Upstash-Forward-
# prefix from headers when it delivers. No Idempotency-Key is forwarded on purpose: a schedule
# sends the same headers on every run, so a fixed key would turn every later run into a replay of
# the first job. callback_url needs WEBHOOK_SECRET set on the server (callbacks are signed).
set -euo pipefail

: "${QSTASH_TOKEN:?set QSTASH_TOKEN (Upstash console > QStash)}"
: "${SLOTSCRIBE_URL:?set SLOTSCRIBE_URL, the public https URL of the service}"
: "${SLOTSCRIBE_API_KEY:?set SLOTSCRIBE_API_KEY, one of the API_KEYS of the server}"
: "${MEDIA_URL:?set MEDIA_URL, the audio or video to transcribe on each run}"
CALLBACK_URL=${CALLBACK_URL:-}
CRON=${CRON:-0 3 * * *} # UTC, as QStash evaluates it
QSTASH_URL=${QSTASH_URL:-https://qstash.upstash.io}

for value in "$SLOTSCRIBE_URL" "$MEDIA_URL" "$CALLBACK_URL"; do
  case "$value" in *\"* | *\\*) echo "URLs must not contain quotes or backslashes: $value" >&2; exit 2 ;; esac
done
body=$(printf '{"url":"%s","response_format":"json","metadata":{"source":"qstash-schedule"}%s}' \
  "$MEDIA_URL" "${CALLBACK_URL:+,\"callback_url\":\"$CALLBACK_URL\"}")

# Secrets go to curl as a header file, so they do not show in the process list.
curl --silent --show-error --fail-with-body \
  --request POST "${QSTASH_URL%/}/v2/schedules/${SLOTSCRIBE_URL%/}/v1/jobs" \
  --header @<(printf 'Authorization: Bearer %s\nUpstash-Forward-Authorization: Bearer %s\n' "$QSTASH_TOKEN" "$SLOTSCRIBE_API_KEY") \
  --header "Content-Type: application/json" \
  --header "Upstash-Cron: $CRON" \
  --header "Upstash-Method: POST" \
  --header "Upstash-Retries: 3" \
  --data "$body"
echo
