"""engine.store.fastq: hot-path queries compiled once return what peewee's own queries return."""
from __future__ import annotations

import pytest

from engine.store import fastq
from engine.store.models import User


def _users(tenant, count: int) -> list[int]:
    rows = [dict(account=tenant.account_id, name=f"Agent {i}", username=f"fq{i}", username_key=f"fq{i}",
                 email=f"fq{i}@acme.test", email_key=f"fq{i}@acme.test", password_hash="x", is_agent=True)
            for i in range(count)]
    User.insert_many(rows).execute()
    return [u.id for u in User.select(User.id).where(User.username_key.startswith("fq")).order_by(User.id)]


def _in_account(account_id, some):
    return User.select(User.id).where((User.account == account_id) & User.id.in_(some)).order_by(User.id)


def test_make_builds_what_a_peewee_select_builds(tenant):
    User.update(permissions={"users": True}, sites=[1, 2], is_agent=True, geo_limit="US").where(
        User.id == tenant.admin_id).execute()
    expected = User.get_by_id(tenant.admin_id)
    made = fastq.get_scoped(User, tenant.account_id, tenant.admin_id)
    assert made.__data__ == expected.__data__
    assert made.is_agent is True and made.sites == [1, 2] and made.account_id == tenant.account_id
    assert made._dirty == set() and made.pgroup is None
    assert fastq.get_scoped(User, tenant.account_id + 1, tenant.admin_id) is None


def test_select_binds_new_values_into_few_sql_texts(tenant, other_tenant):
    ids = _users(tenant, 17)
    for n in (1, 2, 3, 4, 5, 8, 9, 16, 17):
        rows = fastq.select("test.in_account", _in_account, tenant.account_id, ids[:n])
        assert [r[0] for r in rows] == ids[:n]  # padding repeats an id; IN (...) returns it once
    assert fastq.select("test.in_account", _in_account, other_tenant.account_id, ids) == []
    lengths = {key[3] for key in fastq._cache if key[:2] == ("test.in_account", fastq._dialect())}
    assert lengths == {1, 2, 4, 8, 16, 32}  # one SQL text per power of two, however many ids


def test_padding_stops_at_the_longest_in_list():
    assert len(fastq._padded(list(range(3000)))) == 4096
    assert len(fastq._padded(list(range(4097)))) == fastq.MAX_IN
    assert len(fastq._padded(list(range(fastq.MAX_IN + 1)))) == fastq.MAX_IN + 1


def test_select_refuses_what_it_cannot_bind(tenant):
    with pytest.raises(ValueError, match="empty list"):
        fastq.select("test.in_account", _in_account, tenant.account_id, [])
    with pytest.raises(TypeError):
        fastq.select("test.flag", lambda flag: User.select(User.id).where(User.is_agent == flag), True)
    with pytest.raises(ValueError, match="bound as given"):  # contains() wraps the value in %...%
        fastq.select("test.contains", lambda text: User.select(User.id).where(User.name.contains(text)), "Ag")
