module chat-history.local/pause

go 1.25
