using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>What Repair-KvmBackup finds and how it says it (the problem and the fix it shows, -WhatIf included), in
/// cases that the Stryker run of the safety logic (build.ps1 -Task Mutate) found untested; each test names the
/// mutant it kills (docs/mutation-survivors.md).</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RepairFindingsTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private const string Snap = Bench.Snap;
    private readonly Bench _b = new();

    public RepairFindingsTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    private Task<IReadOnlyList<RepairFinding>> InspectAsync() => _b.Repair().InspectAsync(Domain, Snap, CancellationToken.None);

    // Kills RepairService.cs:64 (disk.BackingChain.Count > 0 -> >= 0): a disk whose own file merely ends in the
    // snapshot name (nothing below it) is no overlay; taken for one, Repair-KvmBackup failed on it
    // (ArgumentOutOfRangeException reading the chain) and repaired nothing on the host.
    [Fact]
    public async Task A_disk_whose_own_file_is_named_like_an_overlay_is_not_taken_for_one()
    {
        var own = Path.Combine(_b.Temp.Folder("vdisk_odd"), "data2." + Snap);
        File.WriteAllText(own, "a disk of its own");
        _b.Host.UseDisks(new TestDisk("vda", _b.Boot, "raw"), new TestDisk("vdb", own, "raw") { BackingFormat = null });

        var findings = await InspectAsync();

        Assert.Empty(findings);
        Assert.True(File.Exists(own));
    }

    // An overlay made by hand whose definition does not say the format below it is committed in the format qemu-img
    // reads from the base file. (RepairService.cs:76's FirstOrDefault() -> First() mutant does not fail it: DomainXml
    // gives one format per file of the chain, "" when none is said, so First() finds one too: equivalent.)
    [Fact]
    public async Task An_overlay_whose_definition_names_no_base_format_is_committed_in_the_format_qemu_img_reads()
    {
        File.WriteAllText(Bench.OverlayOf(_b.Boot), "overlay");
        _b.Host.UseDisks(new TestDisk("vda", Bench.OverlayOf(_b.Boot)) { Backing = _b.Boot, BackingFormat = null }, new TestDisk("vdb", _b.Data, "raw"));

        var commit = Assert.Single(await InspectAsync(), f => f.Kind == RepairKind.CommitOverlay);

        Assert.Equal(_b.Boot, commit.Commit!.Source);
        Assert.Equal("raw", commit.Commit.Format);
        Assert.Contains(_b.Host.Calls, c => c.Program == "qemu-img" && c.Command == "info" && c.Args.Contains(_b.Boot));
    }

    // Kills RepairService.cs:93 and :118 (recorded ? "" : " (OdaKvmBackup has no record of it)", both ways) and
    // :127 (journal.SetFolder is null ? ... : ..., both ways and the equality): the user reads whose each leftover is
    // and what the fix will do to the set.
    [Fact]
    public async Task The_findings_of_a_killed_run_say_they_are_its_own_and_what_becomes_of_its_set()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.Release(); // killed on its overlays
        _b.Host.Snapshots.Add(Snap); // a snapshot-create-as whose metadata was not deleted yet

        var findings = await InspectAsync();

        Assert.Equal($"snapshot metadata '{Snap}' is left", findings.Single(f => f.Kind == RepairKind.DeleteSnapshotMetadata).Problem);
        Assert.Equal($"overlay {Bench.OverlayOf(_b.Boot)} would block the next snapshot",
            findings.First(f => f.Kind == RepairKind.RemoveLeftoverOverlay).Problem);
        Assert.Equal("close its journal and mark its set Incomplete unless all of it was copied and verified",
            findings.Single(f => f.Kind == RepairKind.CloseJournal).Action);
    }

    [Fact]
    public async Task The_findings_of_a_killed_run_without_a_set_say_only_the_journal_is_closed()
    {
        var run = await _b.SnapshottedAsync();
        run.Release();

        var findings = await InspectAsync();

        Assert.Equal("close its journal", findings.Single(f => f.Kind == RepairKind.CloseJournal).Action);
    }

    [Fact]
    public async Task The_findings_of_a_backup_by_hand_say_OdaKvmBackup_has_no_record_of_them()
    {
        File.WriteAllText(Bench.OverlayOf(_b.Boot), "overlay");
        _b.Host.UseDisks(new TestDisk("vda", Bench.OverlayOf(_b.Boot)) { Backing = _b.Boot, BackingFormat = "raw" }, new TestDisk("vdb", _b.Data, "raw"));
        _b.Host.Snapshots.Add(Snap);

        var findings = await InspectAsync();

        Assert.Equal($"snapshot metadata '{Snap}' is left (OdaKvmBackup has no record of it)",
            findings.Single(f => f.Kind == RepairKind.DeleteSnapshotMetadata).Problem);
        Assert.Equal($"overlay {Bench.OverlayOf(_b.Boot)} would block the next snapshot (OdaKvmBackup has no record of it)",
            findings.Single(f => f.Kind == RepairKind.RemoveLeftoverOverlay).Problem);
    }

    // Kills RepairService.cs:81 (job.Ready ? ", ready to pivot" : "" -> true ? ...): a leftover commit job that is
    // still copying is not said to be ready to pivot.
    [Fact]
    public async Task A_leftover_commit_job_still_copying_is_not_said_ready_to_pivot()
    {
        var run = await _b.SnapshottedAsync();
        run.Release();
        _b.Host.BlockJobs["vda"] = FakeHost.CommitJob(50, 100);

        var vda = Assert.Single(await InspectAsync(), f => f.Kind == RepairKind.CommitOverlay && f.Target == "vda");

        Assert.Equal("vda has a leftover Active Block Commit job (50 %)", vda.Problem);
    }

    // Kills RepairService.cs:85 (offline ? "commit the overlay offline..." : ... -> false ? ...): for a shut-off
    // domain the fix shown (-WhatIf, the warning without -IncludeUnrecorded) is the offline commit it will do.
    [Fact]
    public async Task The_fix_shown_for_a_shut_off_domain_is_the_offline_commit()
    {
        var run = await _b.SnapshottedAsync();
        run.Release();
        _b.Host.State = "shut off";

        var vda = Assert.Single(await InspectAsync(), f => f.Kind == RepairKind.CommitOverlay && f.Target == "vda");

        Assert.Equal($"commit the overlay offline with qemu-img and point the definition back at {_b.Boot}", vda.Action);
    }

    // Kills RepairService.cs:46 (names is { Count: > 0 } -> >= 0): Repair-KvmBackup given no domain name looks at
    // every domain of the host and every domain with a journal, not at none.
    [Fact]
    public async Task Repair_given_no_domain_names_looks_at_every_domain_and_every_journal()
    {
        var run = await _b.SnapshottedAsync();
        run.Release();

        var domains = await _b.Repair().DomainsToInspectAsync([], CancellationToken.None);

        Assert.Contains(Domain, domains);
        Assert.Equal(domains.Distinct().Count(), domains.Count);
    }
}
