"""switchdesk engine: storage, services, the FreeSWITCH side (ESL, sync, agents, call events) and webhooks."""
