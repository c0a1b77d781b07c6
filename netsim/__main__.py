from netsim.cli.main import main

main()
