#!/usr/bin/env bash
# Applies the switchdesk overlay to a stock FreeSWITCH 1.10 configuration folder, exactly as
# freeswitch-conf/README.md describes (the test suite runs this same script on its copy).
#   usage: install.sh CONF_DIR        e.g. install.sh /etc/freeswitch; then: systemctl restart freeswitch
# Idempotent: running it again gives the same folder. Keeps an existing switchdesk_vars.xml (it
# holds your passwords) unless it still has the shipped placeholder passwords.
set -euo pipefail

conf=${1:?usage: install.sh CONF_DIR (the FreeSWITCH configuration folder, e.g. /etc/freeswitch)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }

[ -d "$conf" ] || die "$conf is not a folder"
[ -f "$conf/vars.xml" ] || die "$conf/vars.xml is missing: is $conf a FreeSWITCH configuration folder?"
[ -f "$conf/freeswitch.xml" ] || die "$conf/freeswitch.xml is missing: is $conf a FreeSWITCH configuration folder?"

# 1. The overlay's files, except this script and the README. An existing switchdesk_vars.xml with
#    real passwords is kept: it is where the admin put them.
keep_vars=false
if [ -f "$conf/switchdesk_vars.xml" ] && ! grep -q 'change-me-' "$conf/switchdesk_vars.xml"; then
  keep_vars=true
fi
for entry in "$here"/*; do
  name=$(basename "$entry")
  case "$name" in
    README.md | install.sh) continue ;;
    switchdesk_vars.xml) if "$keep_vars"; then continue; fi ;;
  esac
  cp -R "$entry" "$conf/"
done

# 2. vars.xml includes switchdesk_vars.xml, once, right after its opening <include>.
if ! grep -q 'data="switchdesk_vars.xml"' "$conf/vars.xml"; then
  grep -q '<include>' "$conf/vars.xml" || die "$conf/vars.xml has no <include> element"
  sed -i '0,/<include>/s//<include>\n  <X-PRE-PROCESS cmd="include" data="switchdesk_vars.xml"\/>/' "$conf/vars.xml"
fi

# 3. Nothing for FreeSWITCH to fall back on when switchdesk does not answer: no local users, no
#    local dialplan, and no stock SIP profile (the stock external-ipv6 profile takes calls into the
#    "public" context without a challenge).
rm -f "$conf"/directory/default.xml "$conf"/directory/default/*.xml
rm -f "$conf"/dialplan/default.xml "$conf"/dialplan/default/*.xml "$conf"/dialplan/public/*.xml
rm -f "$conf"/sip_profiles/internal.xml "$conf"/sip_profiles/external.xml \
      "$conf"/sip_profiles/internal-ipv6.xml "$conf"/sip_profiles/external-ipv6.xml

# 4. Hold music that cannot fail: queues play local_stream://moh, which local_stream.conf.xml maps
#    to $${switchdesk_moh_dir} (default CONF_DIR/switchdesk_moh). A stream with no playable file
#    makes mod_callcenter log about 1,000 errors a second per waiting caller, so a short generated
#    chime (8 kHz 16-bit mono WAV) is always there; add your own 8 kHz WAV files beside it.
moh="$conf/switchdesk_moh"
mkdir -p "$moh"
write_chime() {
  # One period of a 500 Hz and of a 400 Hz sine at 8 kHz (16 and 20 samples, amplitude ~ -20 dBFS),
  # little-endian 16-bit PCM as printf escapes.
  local hi='\x00\x00\xe6\x04\x0d\x09\xd4\x0b\xcd\x0c\xd4\x0b\x0d\x09\xe6\x04\x00\x00\x1a\xfb\xf3\xf6\x2c\xf4\x33\xf3\x2c\xf4\xf3\xf6\x1a\xfb'
  local lo='\x00\x00\xf5\x03\x86\x07\x5b\x0a\x2d\x0c\xcd\x0c\x2d\x0c\x5b\x0a\x86\x07\xf5\x03\x00\x00\x0b\xfc\x7a\xf8\xa5\xf5\xd3\xf3\x33\xf3\xd3\xf3\xa5\xf5\x7a\xf8\x0b\xfc'
  local rate=8000 hi_periods=200 lo_periods=200 silence_samples=20000  # 0.4 s + 0.5 s + 2.5 s
  local samples=$(( hi_periods * 16 + lo_periods * 20 + silence_samples ))
  local data=$(( samples * 2 ))
  le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( $1 & 255 )) $(( ($1 >> 8) & 255 )) \
                  $(( ($1 >> 16) & 255 )) $(( ($1 >> 24) & 255 )); }
  {
    printf 'RIFF'; printf '%b' "$(le32 $(( data + 36 )))"; printf 'WAVEfmt '
    printf '%b' "$(le32 16)"; printf '\x01\x00\x01\x00'; printf '%b' "$(le32 "$rate")"
    printf '%b' "$(le32 $(( rate * 2 )))"; printf '\x02\x00\x10\x00'
    printf 'data'; printf '%b' "$(le32 "$data")"
    local i
    for (( i = 0; i < hi_periods; i++ )); do printf '%b' "$hi"; done
    for (( i = 0; i < lo_periods; i++ )); do printf '%b' "$lo"; done
    head -c $(( silence_samples * 2 )) /dev/zero
  } > "$1.tmp"
  mv "$1.tmp" "$1"
}
write_chime "$moh/switchdesk-hold.wav"

echo "switchdesk overlay installed in $conf; set the passwords in $conf/switchdesk_vars.xml, then: systemctl restart freeswitch" >&2
