
acct-000027-5acct-000027usage.feature(ü¥şÙÃ2Ru5Z
automation`