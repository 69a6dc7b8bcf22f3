from tvae.cli import main

main()
