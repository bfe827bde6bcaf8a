from metagov.cli import app

app()
