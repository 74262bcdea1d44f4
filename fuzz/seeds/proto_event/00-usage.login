
acct-000001-7acct-000001usage.login(¶Ë‡ÕÃ2Ru9