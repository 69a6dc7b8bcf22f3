from tvae.cli.main import main

main()
