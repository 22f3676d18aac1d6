using System.Text.Json.Nodes;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>
/// Manifests forged on the store (issue 13): whoever can write to a backup server can write any backup.json. Each
/// forgery is refused when the set is loaded, as BackupSetUnreadable with its reason, and the good set beside it is
/// still listed.
/// </summary>
public sealed class ForgedManifestTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 11, 20, 22, 0, 0, DateTimeKind.Utc);
    private readonly TempFolder _root = new();

    public void Dispose() => _root.Dispose();

    private static JsonObject Vdb(JsonObject manifest) => manifest["Disks"]![1]!.AsObject();

    /// <summary>Each forgery: what the attacker changes in backup.json, and what the error must quote.</summary>
    private static readonly Dictionary<string, (Action<JsonObject> Tamper, string Says)> Forgeries = new()
    {
        ["Disks null"] = (m => m["Disks"] = null, "Disks"),
        ["Disks missing"] = (m => m.Remove("Disks"), "Disks"),
        ["a disk that is null"] = (m => m["Disks"]![1] = null, "Disks"),
        ["ExcludedDisks null"] = (m => m["ExcludedDisks"] = null, "ExcludedDisks"),
        ["DomainName missing"] = (m => m.Remove("DomainName"), "DomainName"),
        ["File climbing out"] = (m => Vdb(m)["File"] = "../x", "'../x'"),
        ["File climbing out of a subfolder"] = (m => Vdb(m)["File"] = "sub/../../x", "'sub/../../x'"),
        ["File an absolute host path"] = (m => Vdb(m)["File"] = "/etc/cron.d/x", "'/etc/cron.d/x'"),
        ["File in a subfolder"] = (m => Vdb(m)["File"] = "sub/data", "'sub/data'"),
        ["File dot dot"] = (m => Vdb(m)["File"] = "..", "'..'"),
        ["File dot"] = (m => Vdb(m)["File"] = ".", "'.'"),
        ["File empty"] = (m => Vdb(m)["File"] = "", "File of vdb"),
        ["File null"] = (m => Vdb(m)["File"] = null, "File of vdb"),
        ["File with a NUL"] = (m => Vdb(m)["File"] = "da\0ta", "File of vdb"),
        ["File with a line break"] = (m => Vdb(m)["File"] = "da\nta", "File of vdb"),
        ["File the manifest"] = (m => Vdb(m)["File"] = "backup.json", "'backup.json'"),
        ["File the domain XML"] = (m => Vdb(m)["File"] = "domain.xml", "'domain.xml'"),
        ["File of another disk"] = (m => Vdb(m)["File"] = "boot", "'boot'"),
        ["File named as another copy while it is written"] = (m => Vdb(m)["File"] = "boot.partial", "'boot.partial'"),
        ["Target climbing out"] = (m => Vdb(m)["Target"] = "../vdb", "'../vdb'"),
        ["Target with a blank"] = (m => Vdb(m)["Target"] = "vd b", "'vd b'"),
        ["Target empty"] = (m => Vdb(m)["Target"] = "", "Target"),
        ["Target of another disk"] = (m => Vdb(m)["Target"] = "vda", "'vda'"),
        ["Format vmdk"] = (m => Vdb(m)["Format"] = "vmdk", "'vmdk'"),
        ["Format in capitals"] = (m => Vdb(m)["Format"] = "QCOW2", "'QCOW2'"),
        ["DomainName not its folder"] = (m => m["DomainName"] = "vm2", "DomainName 'vm2'"),
        ["DomainName climbing out"] = (m => m["DomainName"] = "../../etc", "DomainName '../../etc'"),
        ["RunId not its folder"] = (m => m["RunId"] = "20261120-220001", "RunId '20261120-220001'"),
        ["SizeBytes negative"] = (m => Vdb(m)["SizeBytes"] = -1, "SizeBytes"),
        ["VirtualSizeBytes negative"] = (m => Vdb(m)["VirtualSizeBytes"] = -1, "VirtualSizeBytes"),
        ["DataBytes negative"] = (m => Vdb(m)["DataBytes"] = -4096, "DataBytes"),
        ["DataBytes larger than SizeBytes"] = (m => Vdb(m)["DataBytes"] = Sets.DiskSize + 4096, "DataBytes"),
        ["Status unknown"] = (m => m["Status"] = "Done", "'Done'"),
        ["Status in lower case"] = (m => m["Status"] = "complete", "'complete'"),
        ["Status as the enum's number"] = (m => m["Status"] = 1, "Status"),
        ["Status as two words"] = (m => m["Status"] = "Complete, Incomplete", "'Complete, Incomplete'"),
        ["a Format of backup.json this version does not know"] = (m => m["Format"] = "OdaKvmBackup/4", "'OdaKvmBackup/4'"),
        ["a Complete set without a ContentDigest"] = (m => Vdb(m)["ContentDigest"] = null, "ContentDigest"),
        ["a ContentDigest that is not a SHA-256"] = (m => Vdb(m)["ContentDigest"] = "not-a-digest", "ContentDigest"),
        ["a Source that is not an absolute path"] = (m => Vdb(m)["Source"] = "data", "Source"),
        ["a SegmentSize that is not a multiple of 4 KiB"] = (m =>
        {
            Vdb(m)["SegmentSize"] = 1000;
            Vdb(m)["SegmentDigests"] = new JsonObject { ["0"] = new string('a', 64) };
        }, "SegmentSize"),
        ["a segment beyond the end of the copy"] = (m =>
        {
            Vdb(m)["SegmentSize"] = 1 << 20;
            Vdb(m)["SegmentDigests"] = new JsonObject { ["999999"] = new string('a', 64) };
        }, "segment"),
        ["Consistency unknown"] = (m => m["Consistency"] = "Magic", "Consistency"),
    };

    public static TheoryData<string> ForgeryNames => new(Forgeries.Keys);

    /// <summary>Forgeries of a set of format OdaKvmBackup/3 (issue 15): its digest list's hash and how it was made.</summary>
    private static readonly Dictionary<string, (Action<JsonObject> Tamper, string Says)> V3Forgeries = new()
    {
        ["a Complete set without Digests"] = (m => Vdb(m)["Digests"] = null, "vdb has no Digests, yet the set says it is Complete"),
        ["a Complete set with only a ContentDigest"] = (m =>
        {
            Vdb(m)["Digests"] = null;
            Vdb(m)["ContentDigest"] = new string('a', 64);
        }, "vdb has no Digests"),
        ["a Complete set without SizeBytes"] = (m => Vdb(m)["SizeBytes"] = null, "vdb has no SizeBytes"),
        ["Digests that are not a SHA-256"] = (m => Vdb(m)["Digests"] = "../data.digests", "the Digests of vdb is not a SHA-256 in hex"),
        ["Digests in capitals"] = (m => Vdb(m)["Digests"] = Vdb(m)["Digests"]!.GetValue<string>().ToUpperInvariant(), "the Digests of vdb"),
        ["File named as another copy's digest list"] = (m => Vdb(m)["File"] = "boot.digests", "the File 'boot.digests' is the name of the digest list of the copy 'boot'"),
        ["File named as another copy's digest list while it is written"] = (m => Vdb(m)["File"] = "boot.digests.partial", "the File 'boot.digests.partial' is the name of the digest list of the copy 'boot' while it is written"),
        ["BasedOn climbing out"] = (m => Vdb(m)["BasedOn"] = "../20261119-220000", "BasedOn of vdb, '../20261119-220000', is not a run id"),
        ["BasedOn a word"] = (m => Vdb(m)["BasedOn"] = "latest", "'latest'"),
        ["BasedOn a run id with a suffix"] = (m => Vdb(m)["BasedOn"] = "20261119-220000.replaced-20261120-000000", "BasedOn of vdb"),
        ["StoredAs unknown"] = (m => Vdb(m)["StoredAs"] = "hardlink", "StoredAs of vdb, 'hardlink', is not one of 'full', 'reflink', 'local copy'"),
        ["StoredAs in capitals"] = (m => Vdb(m)["StoredAs"] = "Reflink", "'Reflink'"),
        ["FullBecause with a terminal escape"] = (m => Vdb(m)["FullBecause"] = "\u001b[2J", "FullBecause of vdb holds a control character"),
        ["BytesRead negative"] = (m => Vdb(m)["BytesRead"] = -1, "BytesRead of vdb is negative"),
        ["BytesSent negative"] = (m => Vdb(m)["BytesSent"] = -1, "BytesSent of vdb is negative"),
        ["BytesCloned negative"] = (m => Vdb(m)["BytesCloned"] = -1, "BytesCloned of vdb is negative"),
        ["BytesResent negative"] = (m => Vdb(m)["BytesResent"] = -1, "BytesResent of vdb is negative"),
        ["a Format of backup.json no version writes"] = (m => m["Format"] = "OdaKvmBackup/3.1", "'OdaKvmBackup/3.1'"),
    };

    public static TheoryData<string> V3ForgeryNames => new(V3Forgeries.Keys);

    [Theory]
    [MemberData(nameof(V3ForgeryNames))]
    public async Task A_forged_manifest_of_the_digest_list_format_is_unreadable_with_its_reason(string forgery)
    {
        var store = new LocalBackupStore(_root.Path);
        var good = await Sets.WriteV3Async(_root.Path, "vm1", T0.AddDays(1));
        var forged = await Sets.WriteV3Async(_root.Path, "vm1", T0, basedOn: "20261119-220000");
        var manifestPath = _root.Combine([.. forged.Split('/'), BackupNames.ManifestFileName]);
        var json = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        Assert.Equal("OdaKvmBackup/3", json["Format"]!.GetValue<string>());
        V3Forgeries[forgery].Tamper(json);
        File.WriteAllText(manifestPath, json.ToJsonString());

        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);

        Assert.Equal([good.Split('/')[1]], listing.Sets.Select(s => s.RunId));
        var bad = Assert.Single(listing.Unreadable);
        Assert.Equal(ErrorIds.BackupSetUnreadable, bad.Error.ErrorId);
        Assert.Contains(V3Forgeries[forgery].Says, bad.Error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sets_of_both_formats_load_and_a_manifest_without_a_format_is_read_as_the_earlier_one()
    {
        var store = new LocalBackupStore(_root.Path);
        var v3 = await Sets.WriteV3Async(_root.Path, "vm1", T0.AddDays(1), basedOn: "20261120-220000");
        var v2 = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var manifestPath = _root.Combine("vm1", v2.RunId, BackupNames.ManifestFileName);
        var json = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        Assert.Equal("OdaKvmBackup/2", json["Format"]!.GetValue<string>());
        json.Remove("Format");
        File.WriteAllText(manifestPath, json.ToJsonString());

        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);

        Assert.Empty(listing.Unreadable);
        Assert.Equal(["OdaKvmBackup/2", "OdaKvmBackup/3"], listing.Sets.Select(s => s.Manifest.Format));
        var vdb = listing.Sets[1].Manifest.Disks[1];
        Assert.Equal(("20261120-220000", "reflink"), (vdb.BasedOn, vdb.StoredAs));
        // A v3 manifest without its Format is a v2 one, and a Complete v2 disk needs its ContentDigest.
        var v3Path = _root.Combine([.. v3.Split('/'), BackupNames.ManifestFileName]);
        var v3Json = JsonNode.Parse(File.ReadAllText(v3Path))!.AsObject();
        v3Json.Remove("Format");
        File.WriteAllText(v3Path, v3Json.ToJsonString());
        var error = await Assert.ThrowsAsync<BackupException>(() => BackupCatalog.LoadAsync(store, v3, CancellationToken.None));
        Assert.Contains("has no ContentDigest, yet the set says it is Complete", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(ForgeryNames))]
    public async Task A_forged_manifest_is_listed_as_unreadable_with_its_reason_and_the_good_set_beside_it_is_still_listed(string forgery)
    {
        var store = new LocalBackupStore(_root.Path);
        var good = await Sets.WriteAsync(store, _root.Path, "vm1", T0.AddDays(1));
        var forged = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var manifestPath = _root.Combine("vm1", forged.RunId, BackupNames.ManifestFileName);
        var json = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        Forgeries[forgery].Tamper(json);
        File.WriteAllText(manifestPath, json.ToJsonString());

        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);

        Assert.Equal([good.RunId], listing.Sets.Select(s => s.RunId));
        var bad = Assert.Single(listing.Unreadable);
        Assert.Equal(store.Describe("vm1/" + forged.RunId), bad.Location);
        Assert.Equal(ErrorIds.BackupSetUnreadable, bad.Error.ErrorId);
        Assert.Contains(manifestPath, bad.Error.Message, StringComparison.Ordinal);
        Assert.Contains(Forgeries[forgery].Says, bad.Error.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrWhiteSpace(bad.Error.RecommendedAction));
        var direct = await Assert.ThrowsAsync<BackupException>(() => BackupCatalog.LoadAsync(store, "vm1/" + forged.RunId, CancellationToken.None));
        Assert.Equal(ErrorIds.BackupSetUnreadable, direct.ErrorId);
    }

    /// <summary>Names a real run gives its sets (see BackupNames.SetFileNames) load as they are.</summary>
    [Theory]
    [InlineData("vdb", "disco secundario, 2", "raw")]
    [InlineData("sdb", "vdb-disk", "qcow2")]
    [InlineData("hdc", "data.img", "raw")]
    [InlineData("vdaa", "disk.partial", "raw")]
    [InlineData("nvme0n1", "disk-ünicode", "qcow2")]
    [InlineData("vdb", "data.digests", "raw")]      // a disk file named so: its own list is data.digests.digests
    [InlineData("vdb", "boot.partial.digests", "raw")]
    public async Task A_sound_manifest_with_unusual_names_loads(string target, string file, string format)
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var folder = _root.Combine("vm1", set.RunId);
        File.Move(Path.Combine(folder, "data"), Path.Combine(folder, file));
        var manifestPath = Path.Combine(folder, BackupNames.ManifestFileName);
        var json = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        (Vdb(json)["Target"], Vdb(json)["File"], Vdb(json)["Format"]) = (target, file, format);
        File.WriteAllText(manifestPath, json.ToJsonString());

        var loaded = await BackupCatalog.LoadAsync(store, "vm1/" + set.RunId, CancellationToken.None);

        Assert.Equal((target, file, format), (loaded!.Disks[1].Target, loaded.Disks[1].File, loaded.Disks[1].Format));
        Assert.Equal(Path.Combine(folder, file), loaded.Disks[1].Location);
    }

    [Fact]
    public async Task Two_folders_holding_the_same_manifest_are_each_unreadable_and_the_set_itself_is_listed()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        foreach (var copy in new[] { "20261119-220000", "20261118-220000" })
        {
            Directory.CreateDirectory(_root.Combine("vm1", copy));
            File.Copy(_root.Combine("vm1", set.RunId, BackupNames.ManifestFileName), _root.Combine("vm1", copy, BackupNames.ManifestFileName));
        }

        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);

        Assert.Equal([set.RunId], listing.Sets.Select(s => s.RunId));
        Assert.Equal([store.Describe("vm1/20261118-220000"), store.Describe("vm1/20261119-220000")], listing.Unreadable.Select(u => u.Location).Order(StringComparer.Ordinal));
        Assert.All(listing.Unreadable, u => Assert.Contains($"RunId '{set.RunId}'", u.Error.Message, StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_newest_set_is_the_one_whose_folder_says_so_not_the_one_whose_manifest_claims_a_later_time()
    {
        var store = new LocalBackupStore(_root.Path);
        var older = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var newer = await Sets.WriteAsync(store, _root.Path, "vm1", T0.AddDays(1));
        var manifestPath = _root.Combine("vm1", older.RunId, BackupNames.ManifestFileName);
        var json = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        json["StartedUtc"] = T0.AddDays(30);
        File.WriteAllText(manifestPath, json.ToJsonString());

        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);

        Assert.Equal([older.RunId, newer.RunId], listing.Sets.Select(s => s.RunId));
        Assert.Equal([newer.RunId], BackupCatalog.Filter(listing.Sets, [], latest: true, DateTime.UtcNow).Select(s => s.RunId));
    }

    [Fact]
    public async Task A_set_dated_in_the_future_is_never_the_latest_the_newest_set_made_before_now_is()
    {
        var store = new LocalBackupStore(_root.Path);
        var real = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        await Sets.WriteAsync(store, _root.Path, "vm1", new DateTime(2099, 1, 1, 22, 0, 0, DateTimeKind.Utc));
        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);
        var now = T0.AddHours(1);

        Assert.Equal([real.RunId], BackupCatalog.Filter(listing.Sets, [], latest: true, now).Select(s => s.RunId));
        Assert.Equal(["20990101-220000"], listing.Sets.Where(s => BackupCatalog.IsInTheFuture(s, now)).Select(s => s.RunId));
        // Within the tolerance for clocks a little apart, a set is not "in the future".
        Assert.False(BackupCatalog.IsInTheFuture(listing.Sets[0], T0 - PrunePolicy.ClockTolerance + TimeSpan.FromSeconds(1)));
        Assert.True(BackupCatalog.IsInTheFuture(listing.Sets[0], T0 - PrunePolicy.ClockTolerance - TimeSpan.FromSeconds(1)));
    }
}
