"""``mirror auth gdrive``: a user OAuth login for Google Drive (installed-app flow).

With a browser on this machine, a loopback redirect (google-auth-oauthlib's local
server) receives the code. Without one (``--no-browser``: a server, a NAS), the user
opens the printed address anywhere, signs in, and pastes back the address the browser
was sent to (it fails to load; its ``code`` parameter is what counts). The resulting
authorized-user credentials (refresh token included) are written with mode 0600 to the
token file that GDriveDriver reads.
"""

from __future__ import annotations

import json
import webbrowser
from collections.abc import Callable
from typing import Any

import click
from google_auth_oauthlib.flow import InstalledAppFlow  # type: ignore[import-untyped]
from oauthlib.oauth2.rfc6749.errors import MismatchingStateError, OAuth2Error  # type: ignore[import-untyped]

from mirror.private_files import write_private

from .gdrive import SCOPES, default_token_file
from .login_network import NETWORK_ERRORS, unreachable

#: loopback address for the paste-back mode: nothing listens there, the browser shows an
#: error page, and its address bar holds the code
PASTE_REDIRECT = "http://127.0.0.1:1/"


class LoginError(click.ClickException):
    """A login the user can set right (mirror's exit code for usage errors)."""

    exit_code = 2


def client_flow(client_secrets: str, **kwargs: Any) -> Any:
    try:
        return InstalledAppFlow.from_client_secrets_file(client_secrets, scopes=SCOPES, **kwargs)
    except ValueError:  # not JSON, or another type of client: "Client secrets must be for a web or installed app"
        raise LoginError(
            f"{client_secrets} is not an OAuth client of type 'Desktop app'; create one in the Google Cloud "
            "console (APIs & Services, Credentials, Create credentials, OAuth client ID) and pass its JSON"
        ) from None


def login_paste(client_secrets: str, token_file: str, ask: Callable[[str], str]) -> None:
    """Paste-back flow: ``ask`` shows the sign-in address and returns what the user pastes."""
    flow = client_flow(client_secrets, redirect_uri=PASTE_REDIRECT)
    url, _ = flow.authorization_url(access_type="offline", prompt="consent")
    answer = ask(url).strip()
    try:
        if answer.startswith("http"):
            # oauthlib insists on https for the response it parses; the loopback one is http
            flow.fetch_token(authorization_response=answer.replace("http://", "https://", 1))
        else:
            flow.fetch_token(code=answer)
    except MismatchingStateError:
        raise LoginError(
            "the pasted address is from another sign-in (an earlier attempt's?); run this command again "
            "and paste the address the browser goes to after you open the one it prints"
        ) from None
    save(flow.credentials, token_file)


def login_browser(client_secrets: str, token_file: str) -> None:
    flow = client_flow(client_secrets)
    try:
        credentials = flow.run_local_server(host="127.0.0.1", port=0, access_type="offline", prompt="consent")
    except webbrowser.Error:
        raise LoginError(
            "no web browser found on this machine; run again with --no-browser, which prints an address "
            "to open on any device"
        ) from None
    save(credentials, token_file)


def save(credentials: Any, token_file: str) -> None:
    info = json.loads(credentials.to_json())
    if not info.get("refresh_token"):
        raise click.ClickException(
            "Google returned no refresh token; remove mirror's access at "
            "myaccount.google.com/permissions and run the login again"
        )
    write_private(token_file, json.dumps(info))


@click.command("gdrive")
@click.option(
    "--client-secrets",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="OAuth client JSON (type 'Desktop app') downloaded from the Google Cloud console.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to keep the login (mode 0600). Default: gdrive-token.json in the user config folder.",
)
@click.option("--no-browser", is_flag=True, help="Print the address and paste the result back (headless).")
def command(client_secrets: str, token_file: str | None, no_browser: bool) -> None:
    """Sign in to Google Drive and store the refresh token."""
    path = token_file or default_token_file()

    def ask(url: str) -> str:
        click.echo(f"Open this address in a browser, sign in and allow access:\n\n  {url}\n")
        click.echo("The browser then fails to open a 127.0.0.1 page: copy that page's full address.")
        return str(click.prompt("Paste the address (or the code)"))

    try:
        if no_browser:
            login_paste(client_secrets, path, ask)
        else:
            login_browser(client_secrets, path)
    except NETWORK_ERRORS as exc:
        # before OSError, which requests' errors are too: this is no failed login
        raise unreachable("Google's login service", exc, "mirror auth gdrive") from None
    except (ValueError, OSError, OAuth2Error) as exc:
        raise click.ClickException(f"Google login failed: {type(exc).__name__}: {exc}") from exc
    click.echo(f"Google Drive login saved to {path}")
    click.echo('Use it in a target:  url = "gdrive://Folder"  (options: token_file if not the default)')
