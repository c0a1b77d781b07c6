from netsim.cli.app import main

main()
