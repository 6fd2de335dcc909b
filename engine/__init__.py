"""switchdesk engine: storage, services, the FreeSWITCH side (ESL, mod_callcenter sync, agents, call events) and webhooks."""
