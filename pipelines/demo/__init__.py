"""`sare demo`: the end-to-end job on the synthetic city (`job`: run(DemoConfig); `cli`)."""
