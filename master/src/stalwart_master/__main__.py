from stalwart_master.cli import main

main()
