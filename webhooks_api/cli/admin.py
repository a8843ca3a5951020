"""Organizations, API keys and endpoints, as an operator manages them."""

from __future__ import annotations

import click

from .base import echo_json, format_stamp, load_cli_settings, service_errors, use_broker


@click.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--id", "organization_id", default=None, help="Use this org- id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def org_create(name: str, organization_id: str | None, as_json: bool) -> None:
    """Create an organization; prints its id and root API key (shown only once)."""
    from shared.db import session_scope
    from shared.services import organizations

    load_cli_settings()
    use_broker()  # initialization is enqueued after the commit
    with service_errors(), session_scope() as session:
        new_org, root = organizations.create_organization(
            session, name=name, organization_id=organization_id
        )
        organizations.start_initialization(session, organization_id=new_org.id)
    if as_json:
        echo_json({"organizationId": new_org.id, "userId": root.user.id, "apiKey": root.api_key})
    else:
        click.echo(f"organization: {new_org.id}")
        click.echo(f"root user:    {root.user.id}")
        click.echo(f"api key:      {root.api_key}   (shown only now)")


@org.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def org_list(as_json: bool) -> None:
    """List every organization with its users, endpoints and initialization status."""
    from shared.db import session_scope
    from shared.services.operations import list_organization_summaries

    load_cli_settings()
    with service_errors(), session_scope() as session:
        rows = [
            {
                "id": s.organization.id,
                "name": s.organization.name,
                "createdAt": format_stamp(s.organization.created_at),
                "initialization": s.initialization_status,
                "users": s.users,
                "endpoints": s.endpoints,
            }
            for s in list_organization_summaries(session)
        ]
    if as_json:
        echo_json({"items": rows, "total": len(rows)})
        return
    click.echo(f"{'ID':<20} {'INIT':<12} {'USERS':>5} {'ENDPOINTS':>9}  {'CREATED':<24} NAME")
    for r in rows:
        click.echo(
            f"{r['id']:<20} {r['initialization'] or '-':<12} {r['users']:>5} "
            f"{r['endpoints']:>9}  {r['createdAt']:<24} {r['name']}"
        )
    click.echo(f"{len(rows)} organization(s)", err=True)


@click.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--org", "organization_id", default=None, help="For this organization's root user.")
@click.option("--user", "user_id", default=None, help="For this user.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def key_create(organization_id: str | None, user_id: str | None, as_json: bool) -> None:
    """Issue a new API key for a user or an organization's root (shown only once)."""
    from shared.db import session_scope
    from shared.services.operations import issue_api_key

    if (organization_id is None) == (user_id is None):
        raise click.UsageError("give exactly one of --org or --user")
    load_cli_settings()
    with service_errors(), session_scope() as session:
        user, api_key = issue_api_key(session, user_id=user_id, organization_id=organization_id)
        result = {
            "organizationId": user.organization_id,
            "userId": user.id,
            "role": user.role,
            "apiKey": api_key,
        }
    if as_json:
        echo_json(result)
    else:
        click.echo(f"user:    {result['userId']} ({result['role']} of {result['organizationId']})")
        click.echo(f"api key: {api_key}   (shown only now)")


# ---- endpoints -----------------------------------------------------------------------------


@click.group()
def endpoint() -> None:
    """Endpoints of every organization."""


@endpoint.command("list")
@click.option("--org", "organization_id", default=None, help="Only this organization's.")
@click.option("--status", type=click.Choice(["active", "disabled"]), default=None)
@click.option("--url-contains", default=None, help="Only endpoints whose URL contains this.")
@click.option("--category", default=None, help="Preconfigured category, or team-hook.")
@click.option("--failing", is_flag=True, help="Only endpoints failing right now.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def endpoint_list(
    organization_id: str | None,
    status: str | None,
    url_contains: str | None,
    category: str | None,
    failing: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List endpoints with their delivery figures, oldest first."""
    from shared.db import session_scope
    from shared.schemas import OperatorEndpointWithStatsSchema
    from shared.services.operations import list_all_endpoints

    load_cli_settings()
    with service_errors(), session_scope() as session:
        found, total = list_all_endpoints(
            session,
            organization_id=organization_id,
            status=status,
            url_contains=url_contains,
            category=category,
            failing=failing,
            limit=limit,
            offset=offset,
        )
        rows = OperatorEndpointWithStatsSchema(many=True).dump(found)
    if as_json:
        echo_json({"items": rows, "total": total})
        return
    click.echo(f"{'ID':<20} {'ORGANIZATION':<20} {'STATUS':<9} {'OK':>6} {'FAILED':>6} URL")
    for r in rows:
        click.echo(
            f"{r['id']:<20} {r['organizationId']:<20} {r['status']:<9} "
            f"{r['stats']['successful']:>6} {r['stats']['failed']:>6} {r['url']}"
        )
    click.echo(f"{len(rows)} of {total} endpoint(s)", err=True)


def _set_active(endpoint_id: str, active: bool, reason: str | None, as_json: bool) -> None:
    from shared.db import session_scope
    from shared.schemas import OperatorEndpointSchema
    from shared.services.operations import set_endpoint_active

    load_cli_settings()
    with service_errors(), session_scope() as session:
        found, changed = set_endpoint_active(
            session, endpoint_id=endpoint_id, active=active, reason=reason
        )
        row = OperatorEndpointSchema().dump(found)
    if as_json:
        echo_json({**row, "changed": changed})
    elif changed:
        click.echo(f"{endpoint_id} is now {row['status']}")
    else:
        click.echo(f"{endpoint_id} was already {row['status']}")


@endpoint.command("disable")
@click.argument("endpoint_id")
@click.option("--reason", default=None, help="Shown as the endpoint's disabledReason.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def endpoint_disable(endpoint_id: str, reason: str | None, as_json: bool) -> None:
    """Disable an endpoint; its pending deliveries are cancelled."""
    _set_active(endpoint_id, False, reason, as_json)


@endpoint.command("enable")
@click.argument("endpoint_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def endpoint_enable(endpoint_id: str, as_json: bool) -> None:
    """Enable a disabled endpoint again (new messages are delivered to it)."""
    _set_active(endpoint_id, True, None, as_json)
