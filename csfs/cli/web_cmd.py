"""`csfs web`: serve the browser reader on 127.0.0.1 for one's own use."""

from __future__ import annotations

import click

from csfs.cli.group import CsfsCommand
from csfs.web import dist_dir, make_server


@click.command(cls=CsfsCommand)
@click.option(
    "--port", default=8470, show_default=True, help="Port on 127.0.0.1 (0: any free one)."
)
def web(port: int) -> None:
    """Serve the browser reader (all decryption happens in the browser)."""
    server = make_server(dist_dir(), port)
    port = server.server_address[1]
    click.echo(f"csfs web reader: http://127.0.0.1:{port}/  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
