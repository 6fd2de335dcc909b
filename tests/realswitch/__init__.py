"""A real FreeSWITCH in the test suite: the harness that starts it, switchdesk and sipp phones on loopback.

FreeSWITCH comes from ``SWITCHDESK_FREESWITCH`` (an install folder holding ``bin/freeswitch``) or is
unpacked once from ``<repo>/../shared/freeswitch`` into a cache; its configuration is the stock one
with ``freeswitch-conf/install.sh`` applied exactly as users do, plus test-only tweaks (loopback,
free ports, random passwords). See ``conftest.py`` for the fixtures.
"""
