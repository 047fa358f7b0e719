"""user service: accounts, credentials, the USD balance and its ledger, portfolio views."""
