// One-shot (mongosh): make the single node a replica set (transactions need one) and wait
// until it is primary.  Safe to run again: an initiated set is left alone.
const host = process.env.MONGO_MEMBER_HOST || "mongo:27017";
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({_id: "rs0", members: [{_id: 0, host: host}]});
  print("replica set rs0 initiated with " + host);
}
for (let i = 0; !db.hello().isWritablePrimary; i++) {
  if (i > 120) throw new Error("rs0 has no primary after 60 s");
  sleep(500);
}
print("rs0 primary: " + db.hello().primary);
