"""``mirror auth dropbox``: log in to Dropbox once and keep a refresh token for unattended use.

Runs Dropbox's OAuth2 PKCE flow without a redirect (no app secret, no local web server):
it prints the URL to open, reads the code Dropbox shows after "Allow", exchanges it for
a long-lived refresh token, stores that with the app key in a JSON file of mode 0600,
and prints the target configuration that uses it. Access tokens last hours; the SDK
renews them from the refresh token by itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mirror.private_files import write_private

from .dropbox import default_token_file
from .login_network import NETWORK_ERRORS, unreachable


@click.command("dropbox")
@click.option("--app-key", required=True, help="App key from https://www.dropbox.com/developers/apps")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to store the refresh token (default: dropbox-token.json in the user config folder).",
)
@click.option("--folder", default="Mirror", show_default=True, help="Dropbox folder used in the printed config.")
def command(app_key: str, token_file: Path | None, folder: str) -> None:
    """Log in to Dropbox (PKCE, no app secret) and store a refresh token."""
    import dropbox

    # "offline" asks for a refresh token: a mode name, not a secret
    flow = dropbox.DropboxOAuth2FlowNoRedirect(app_key, use_pkce=True, token_access_type="offline")  # noqa: S106
    click.echo("1. Open this address in a browser and sign in to Dropbox:")
    click.echo(f"   {flow.start()}")
    click.echo('2. Click "Allow", then copy the code Dropbox shows.')
    code = click.prompt("3. Paste the code here", hide_input=False).strip()
    try:
        result = flow.finish(code)
    except NETWORK_ERRORS as exc:
        raise unreachable("Dropbox", exc, "mirror auth dropbox") from None
    except Exception as exc:
        # the exception text may echo the request, which carries the code: keep it out
        raise click.ClickException(
            f"Dropbox did not accept the code ({type(exc).__name__}); start again"
        ) from None
    if not result.refresh_token:
        raise click.ClickException("Dropbox returned no refresh token; start again")
    path = (token_file or default_token_file()).expanduser()
    stored = {"app_key": app_key, "refresh_token": result.refresh_token, "account_id": result.account_id}
    write_private(path, json.dumps(stored, indent=2) + "\n")
    click.echo(f"Logged in; refresh token stored in {path} (mode 0600).")
    click.echo("Add a target like this to your config:")
    click.echo("")
    click.echo("[targets.dropbox]")
    click.echo(f'url = "dropbox://{folder.strip("/")}"')
    click.echo(f'options = {{ token_file = "{path}" }}')
