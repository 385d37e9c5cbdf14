from facesearch.cli.main import app

app(prog_name="facesearch")
