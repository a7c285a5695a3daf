"""``mirror auth onedrive``: a delegated Microsoft login with the device-code flow.

The device-code flow needs no browser on the machine running mirror (a server, a NAS):
the user opens the shown address on any device and enters the code. msal keeps the
refresh token in its cache, stored with the client id and authority in a token file of
mode 0600; OneDriveDriver renews access tokens from it silently.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import msal

from mirror.errors import ConfigError

from .login_network import NETWORK_ERRORS, unreachable
from .onedrive import AUTHORITY, SCOPES, default_token_file, msal_http, save_login


def login(
    client_id: str, authority: str, token_file: str, ca_certs: str | None, show: Callable[[str], None]
) -> str:
    """Run the device-code flow, save the login to ``token_file``; returns the account name."""
    cache = msal.SerializableTokenCache()
    app = msal.PublicClientApplication(
        client_id,
        authority=authority,
        token_cache=cache,
        http_client=msal_http(ca_certs),
        instance_discovery=not ca_certs,
    )
    flow = app.initiate_device_flow(scopes=SCOPES)
    if "user_code" not in flow:
        why = flow.get("error_description") or flow.get("error")
        raise ConfigError(f"Microsoft refused to start a login: {why}")
    show(str(flow["message"]))
    result = app.acquire_token_by_device_flow(flow)
    if "access_token" not in result:
        raise ConfigError(f"login failed: {result.get('error_description') or result.get('error')}")
    save_login(token_file, client_id, authority, cache)
    accounts = app.get_accounts()
    return str(accounts[0].get("username", "")) if accounts else ""


@click.command("onedrive")
@click.option("--client-id", required=True, help="Application (client) ID of your Azure app registration.")
@click.option(
    "--tenant",
    default="common",
    show_default=True,
    help="'consumers' for personal accounts only, 'organizations', or a tenant id/domain.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to keep the login (mode 0600). Default: onedrive-token.json in the user config folder.",
)
@click.option("--authority-url", default=None, hidden=True, help="Login service base URL (tests).")
@click.option("--ca-certs", default=None, hidden=True, help="CA bundle for the login service (tests).")
def command(
    client_id: str, tenant: str, token_file: str | None, authority_url: str | None, ca_certs: str | None
) -> None:
    """Sign in to OneDrive (personal or work/school) with a device code."""
    base = (authority_url or AUTHORITY.rsplit("/", 1)[0]).rstrip("/")
    path = token_file or default_token_file()
    try:
        user = login(client_id, f"{base}/{tenant}", path, ca_certs, click.echo)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except NETWORK_ERRORS as exc:
        raise unreachable("Microsoft's login service", exc, "mirror auth onedrive") from None
    click.echo(f"Signed in{' as ' + user if user else ''}; login saved to {path}")
    click.echo('Use it in a target:  url = "onedrive://Folder"  (options: token_file if not the default)')
