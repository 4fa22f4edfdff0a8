#!/usr/bin/env bash
# What an external system's webhook must send to start a slotscribe job: the request below, made
# by anything that lets you set the URL, headers and JSON body of its webhook (an object-storage
# "object created" notification relayed through a function, a form or automation tool, a CI step).
# Run it to try the request by hand.
#
#   SLOTSCRIBE_URL=https://my-slotscribe.fly.dev SLOTSCRIBE_API_KEY=... \
#   MEDIA_URL=https://bucket.example.com/uploads/call-42.m4a EVENT_ID=evt_42 \
#   CALLBACK_URL=https://example.com/hooks/transcript infra/examples/webhook-submit.sh
#
# EVENT_ID becomes the Idempotency-Key: webhook senders retry on timeouts and errors, and the same
# key returns the job already created (header Idempotent-Replayed: true) instead of a second one.
# Use the sender's own delivery or event id. Senders that cannot set headers or shape the body
# (GitHub, Stripe) need a small relay that checks their signature and makes this request.
set -euo pipefail

: "${SLOTSCRIBE_URL:?set SLOTSCRIBE_URL}"
: "${SLOTSCRIBE_API_KEY:?set SLOTSCRIBE_API_KEY, one of the API_KEYS of the server}"
: "${MEDIA_URL:?set MEDIA_URL, the audio or video to transcribe}"
: "${EVENT_ID:?set EVENT_ID, the event or delivery id of the sender}"
CALLBACK_URL=${CALLBACK_URL:-}

for value in "$MEDIA_URL" "$CALLBACK_URL" "$EVENT_ID"; do
  case "$value" in *\"* | *\\*) echo "values must not contain quotes or backslashes: $value" >&2; exit 2 ;; esac
done
body=$(printf '{"url":"%s","metadata":{"event_id":"%s"}%s}' \
  "$MEDIA_URL" "$EVENT_ID" "${CALLBACK_URL:+,\"callback_url\":\"$CALLBACK_URL\"}")

curl --silent --show-error --fail-with-body \
  --request POST "${SLOTSCRIBE_URL%/}/v1/jobs" \
  --header @<(printf 'Authorization: Bearer %s\n' "$SLOTSCRIBE_API_KEY") \
  --header "Content-Type: application/json" \
  --header "Idempotency-Key: $EVENT_ID" \
  --data "$body"
echo
