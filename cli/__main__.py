from evoforge.cli.main import main

main()
