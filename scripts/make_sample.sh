#!/usr/bin/env bash
# Regenerate samples/sample.wav (16 kHz mono 16-bit) and samples/sample.txt with espeak-ng and sox.
#
#   apt-get install espeak-ng sox    # tested with espeak-ng 1.51 and SoX 14.4.2
#   scripts/make_sample.sh
#
# The speech is synthesized, so the sample is the project's own work (CC0, see samples/README.md). Output is
# deterministic for given espeak-ng and SoX versions (no dither); another espeak-ng version may differ slightly.
set -euo pipefail

SENTENCES=(
  "The sun is shining and the sky is blue."
  "My friend lives in a small house near the river."
  "We will meet at the station at noon."
  "Please close the door when you leave the room."
)
VOICE=en-us   # General American male
SPEED=150     # words per minute (espeak-ng's default is 175)
PAUSE=700ms   # silence between sentences

cd "$(dirname "$0")/.."
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "make_sample.sh: $tool is not installed" >&2; exit 1; }
done

ssml="<speak>"
for sentence in "${SENTENCES[@]}"; do
  ssml+="${sentence} <break time=\"${PAUSE}\"/> "
done
ssml+="</speak>"

raw=$(mktemp --suffix=.wav)
trap 'rm -f "$raw"' EXIT
espeak-ng -m -v "$VOICE" -s "$SPEED" -w "$raw" "$ssml"          # 22050 Hz mono 16-bit
# 16 kHz mono 16-bit, peaks at -3 dBFS, leading/trailing silence trimmed to 0.3 s, no dither (reproducible bytes)
sox -D "$raw" -r 16000 -c 1 -b 16 samples/sample.wav \
  silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse pad 0.3 0.3 norm -3

printf '%s\n' "${SENTENCES[*]}" > samples/sample.txt
echo "wrote samples/sample.wav ($(soxi -d samples/sample.wav), $(stat -c %s samples/sample.wav) bytes) and samples/sample.txt"
