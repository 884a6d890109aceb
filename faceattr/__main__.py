from faceattr.cli import run

run()
