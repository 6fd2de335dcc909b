"""Voicemail: boxes of FreeSWITCH's mod_voicemail, which a user's `vm_id` names.

Owns `VoicemailBox` rows (`boxes`): a box is served to mod_voicemail through our directory as user
`vm-<box id>` of the account's domain (its PIN as `vm-a1-hash`), and the dialplan sends a user's
unanswered calls there after `call_timeout` (api.freeswitch). Messages live in mod_voicemail; `messages`
lists, fetches and deletes them over the event socket (`vm_list`, `vm_delete`). Uses `store` and `esl`.
"""
