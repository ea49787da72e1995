from llada_cli.cli.app import main

main()
