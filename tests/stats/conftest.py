"""The emulator fixtures of the agent tests (a shop with two agents and a queue, an engine)."""
from tests.callcenter.test_agents import engine, floor, shop, shop_api  # noqa: F401 - fixtures
