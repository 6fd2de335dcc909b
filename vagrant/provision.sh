#!/usr/bin/env bash
# Provisions a Debian 12 machine with FreeSWITCH 1.10 (SignalWire's packages) and switchdesk
# as systemd services, then checks that they work together. Run by the Vagrantfile as root;
# runs as well on a bare Debian 12 box from a checkout:
#
#   SIGNALWIRE_TOKEN=pat_... SWITCHDESK_SRC=/path/to/checkout bash vagrant/provision.sh
#
# Idempotent: running it again upgrades switchdesk from the checkout (migrations included),
# keeps the database, the passwords and the FreeSWITCH configuration's local changes outside
# the overlay. The SignalWire token is needed only until the package source is set up.
set -euo pipefail

SRC=${SWITCHDESK_SRC:-/switchdesk}
PREFIX=/opt/switchdesk
ETC=/etc/switchdesk
ENV_FILE=$ETC/switchdesk.env
STATE=/var/lib/switchdesk
CREDENTIALS=/root/switchdesk-admin.txt
DOMAIN=${SWITCHDESK_DOMAIN:-switchdesk.test}
API_LISTEN=${SWITCHDESK_VM_LISTEN:-0.0.0.0:8080}
API_PORT=${API_LISTEN##*:}
RTP_START=${SWITCHDESK_RTP_START:-16384}
RTP_END=${SWITCHDESK_RTP_END:-16483}
FS_REPO_HOST=freeswitch.signalwire.com
FS_REPO_URL=https://$FS_REPO_HOST/repo/deb/debian-release
FS_KEYRING=/usr/share/keyrings/signalwire-freeswitch-repo.gpg
FS_AUTH=/etc/apt/auth.conf.d/freeswitch.conf

die() {
    echo "provision: ERROR: $*" >&2
    exit 1
}
step() { echo "==> $*"; }

# --- 1. the SignalWire token: checked first, before anything slow -------------------------------
if [ ! -s "$FS_AUTH" ] && [ -z "${SIGNALWIRE_TOKEN:-}" ]; then
    die "SIGNALWIRE_TOKEN is not set.
FreeSWITCH's Debian packages are behind a SignalWire Personal Access Token (free):
sign up at signalwire.com, open Personal Access Tokens (see the FreeSWITCH docs page
'HOWTO Create a SignalWire Personal Access Token'), create one, then run
    SIGNALWIRE_TOKEN=pat_... vagrant up        (or: vagrant provision)"
fi

[ "$(id -u)" = 0 ] || die "run as root"
if [ ! -f "$SRC/setup.cfg" ] || [ ! -d "$SRC/freeswitch-conf" ]; then
    die "no switchdesk checkout at $SRC (set SWITCHDESK_SRC)"
fi
# shellcheck source=/dev/null
. /etc/os-release
if [ "${ID:-}" != debian ] || [ "${VERSION_CODENAME:-}" != bookworm ]; then
    die "this script is for Debian 12 (bookworm); found ${PRETTY_NAME:-an unknown system}"
fi

export DEBIAN_FRONTEND=noninteractive
step "Debian packages"
apt-get update -q
apt-get install -y -q ca-certificates curl gnupg python3 python3-venv python3-pip sqlite3

# --- 2. FreeSWITCH 1.10 from SignalWire's repository ----------------------------------------------
if [ -n "${SIGNALWIRE_TOKEN:-}" ]; then
    step "SignalWire package source for $VERSION_CODENAME"
    install -d -m 0755 /etc/apt/auth.conf.d
    # apt's auth.conf is netrc-shaped: the token never appears on a command line
    (umask 077 && printf 'machine %s\nlogin signalwire\npassword %s\n' "$FS_REPO_HOST" "$SIGNALWIRE_TOKEN" >"$FS_AUTH")
    chmod 600 "$FS_AUTH"
fi
if [ ! -s "$FS_KEYRING" ]; then
    curl -fsS --netrc-file "$FS_AUTH" -o "$FS_KEYRING.tmp" "$FS_REPO_URL/signalwire-freeswitch-repo.gpg" \
        || { rm -f "$FS_KEYRING.tmp" "$FS_AUTH"; die "SignalWire refused the token or cannot be reached (key download failed)"; }
    mv "$FS_KEYRING.tmp" "$FS_KEYRING"
fi
echo "deb [signed-by=$FS_KEYRING] $FS_REPO_URL/ $VERSION_CODENAME main" >/etc/apt/sources.list.d/freeswitch.list
apt-get update -q

# the packages of exactly the modules the overlay loads (mod_xml_curl -> freeswitch-mod-xml-curl)
mapfile -t FS_MODULES < <(grep -o 'module="mod_[a-z0-9_]*"' "$SRC/freeswitch-conf/autoload_configs/modules.conf.xml" \
    | sed -e 's/module="//' -e 's/"$//' -e 's/_/-/g' -e 's/^/freeswitch-/')
[ "${#FS_MODULES[@]}" -gt 0 ] || die "no modules found in freeswitch-conf/autoload_configs/modules.conf.xml"
step "FreeSWITCH and ${#FS_MODULES[@]} modules"
apt-get install -y -q freeswitch freeswitch-systemd freeswitch-conf-vanilla freeswitch-lang-en \
    freeswitch-sounds-en-us-callie freeswitch-music-default "${FS_MODULES[@]}"
command -v fs_cli >/dev/null || die "fs_cli is missing after installing FreeSWITCH"

# --- 3. switchdesk: user, venv from the checkout, settings -----------------------------------------
step "switchdesk into $PREFIX/venv"
id switchdesk >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin switchdesk
install -d -o switchdesk -g switchdesk -m 0750 "$STATE"
# uploaded media (hold music, announcements): written by switchdesk, read by FreeSWITCH
install -d -o switchdesk -g switchdesk -m 0755 /var/lib/switchdesk-media
# recordings: FreeSWITCH writes them, switchdesk serves and deletes them (setgid: files keep the group)
install -d -o freeswitch -g switchdesk -m 2770 /var/lib/switchdesk-recordings
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
# a copy, not an editable install: the service must not depend on the synced folder
"$PREFIX/venv/bin/pip" install -q --upgrade --force-reinstall --no-deps "$SRC"
"$PREFIX/venv/bin/pip" install -q "$SRC"

install -d -m 0750 -g switchdesk "$ETC"
if [ ! -f "$ENV_FILE" ]; then
    step "settings with fresh secrets in $ENV_FILE"
    secret() { python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"; }
    (umask 077 && sed -e "s|^SWITCHDESK_ESL_PASSWORD=.*|SWITCHDESK_ESL_PASSWORD=$(secret 12)|" \
        -e "s|^SWITCHDESK_XMLCURL_PASSWORD=.*|SWITCHDESK_XMLCURL_PASSWORD=$(secret 12)|" \
        -e "s|^SWITCHDESK_SECRET_KEY=.*|SWITCHDESK_SECRET_KEY=$(secret 32)|" \
        -e "s|^SWITCHDESK_LISTEN=.*|SWITCHDESK_LISTEN=$API_LISTEN|" \
        "$SRC/vagrant/systemd/switchdesk.env.example" >"$ENV_FILE.tmp")
    mv "$ENV_FILE.tmp" "$ENV_FILE"
fi
chown root:switchdesk "$ENV_FILE"
chmod 0640 "$ENV_FILE"
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a
if grep -q '^[^#]*CHANGE_ME' "$ENV_FILE"; then die "$ENV_FILE still has CHANGE_ME values"; fi

# --- 4. the freeswitch-conf overlay (freeswitch-conf/README.md) -------------------------------------
step "FreeSWITCH configuration overlay"
if [ ! -f /etc/freeswitch/freeswitch.xml ]; then
    [ -f /usr/share/freeswitch/conf/vanilla/freeswitch.xml ] || die "no stock configuration (freeswitch-conf-vanilla)"
    install -d /etc/freeswitch
    cp -a /usr/share/freeswitch/conf/vanilla/. /etc/freeswitch/
fi
(cd "$SRC/freeswitch-conf" && find . -type f ! -name README.md -exec install -D -m 0644 {} /etc/freeswitch/{} \;)
grep -q 'data="switchdesk_vars.xml"' /etc/freeswitch/vars.xml \
    || sed -i '1a <X-PRE-PROCESS cmd="include" data="switchdesk_vars.xml"/>' /etc/freeswitch/vars.xml
# nothing local for FreeSWITCH to fall back on when switchdesk does not answer
rm -f /etc/freeswitch/directory/default.xml /etc/freeswitch/directory/default/*.xml
rm -f /etc/freeswitch/dialplan/default.xml /etc/freeswitch/dialplan/default/*.xml /etc/freeswitch/dialplan/public/*.xml
rm -f /etc/freeswitch/sip_profiles/internal.xml /etc/freeswitch/sip_profiles/external.xml
sed -i -E \
    -e "s|(switchdesk_esl_password=)[^\"]*|\1$SWITCHDESK_ESL_PASSWORD|" \
    -e "s|(switchdesk_xmlcurl_password=)[^\"]*|\1$SWITCHDESK_XMLCURL_PASSWORD|" \
    -e "s|(switchdesk_url=http://127\.0\.0\.1:)[0-9]+|\1$API_PORT|" \
    /etc/freeswitch/switchdesk_vars.xml
# a smaller RTP range, so that the VM can forward all of it
SWITCH_CONF=/etc/freeswitch/autoload_configs/switch.conf.xml
sed -i -E \
    -e "s|(<!-- *)?<param name=\"rtp-start-port\" value=\"[0-9]+\"/>( *-->)?|<param name=\"rtp-start-port\" value=\"$RTP_START\"/>|" \
    -e "s|(<!-- *)?<param name=\"rtp-end-port\" value=\"[0-9]+\"/>( *-->)?|<param name=\"rtp-end-port\" value=\"$RTP_END\"/>|" \
    "$SWITCH_CONF"
grep -q "rtp-start-port\" value=\"$RTP_START\"" "$SWITCH_CONF" || die "could not set the RTP range in $SWITCH_CONF"
chmod 0640 /etc/freeswitch/switchdesk_vars.xml
chown -R freeswitch:freeswitch /etc/freeswitch

# --- 5. schema (first run: account and admin), services ---------------------------------------------
step "switchdesk init (creates or upgrades the schema)"
init_out=$(runuser -u switchdesk -- "$PREFIX/venv/bin/switchdesk" init --db "$SWITCHDESK_DB" --domain "$DOMAIN" 2>&1)
echo "$init_out" | grep -v -e 'password:' -e 'api key:' || true
if echo "$init_out" | grep -q 'api key:'; then
    (umask 077 && echo "$init_out" >"$CREDENTIALS")
    echo "    the first admin's password and API key are in $CREDENTIALS (root only); they are shown once"
fi

step "systemd units"
install -m 0644 "$SRC/vagrant/systemd/switchdesk.service" /etc/systemd/system/switchdesk.service
systemctl daemon-reload
systemctl enable --quiet switchdesk freeswitch
systemctl restart switchdesk
# FreeSWITCH after switchdesk, so that its first xml_curl fetches get an answer
systemctl restart freeswitch

# --- 6. smoke check ------------------------------------------------------------------------------
step "smoke check"
api=http://127.0.0.1:$API_PORT
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 "$seconds"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what (see: journalctl -u switchdesk -u freeswitch)"
}
wait_for 60 "the API does not answer $api/api/health" curl -fsS "$api/api/health"
esl_connected() {
    if [ -s "$CREDENTIALS" ]; then
        key=$(sed -n 's/^ *api key: *//p' "$CREDENTIALS")
        curl -fsS -H "Authorization: Bearer $key" "$api/api/status" | grep -q '"connected": *true'
    else  # no key at hand (an existing database): the same state, from the loopback-only metrics
        curl -fsS "$api/metrics" | grep -q '^switchdesk_esl_connected{connection="commands"} 1'
    fi
}
wait_for 90 "switchdesk is not connected to FreeSWITCH's event socket" esl_connected
callcenter_loaded() {
    [ "$(fs_cli -H 127.0.0.1 -P 8021 -p "$SWITCHDESK_ESL_PASSWORD" -x 'module_exists mod_callcenter' | tr -d '[:space:]')" = true ]
}
wait_for 30 "mod_callcenter is not loaded" callcenter_loaded
# SWITCHDESK_REALTIME=1 in the env file: the unit's LimitRTPRIO=1 must have let the event loop take SCHED_RR
if grep -q '^SWITCHDESK_REALTIME=1' "$ENV_FILE"; then
    chrt -p "$(systemctl show -p MainPID --value switchdesk)" | grep -q SCHED_RR \
        || die "switchdesk's event loop is not at real-time priority: journalctl -u switchdesk | grep realtime"
    # beside a FreeSWITCH at normal priority it would run ahead of the switch's media (README: Real-time priority)
    chrt -p "$(systemctl show -p MainPID --value freeswitch)" | grep -Eq 'SCHED_(FIFO|RR)' \
        || echo "WARNING: FreeSWITCH is not at real-time priority; set SWITCHDESK_REALTIME=0 in $ENV_FILE" >&2
fi
echo "==> ready: API $api (forwarded to the host), SIP 5060, RTP $RTP_START-$RTP_END"
