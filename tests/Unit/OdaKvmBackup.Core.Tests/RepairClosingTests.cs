using System.Text.Json;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>How Repair-KvmBackup closes the set of a run whose process is gone (the reason in backup.json, the line
/// it prints), in cases that the Stryker run of the safety logic (build.ps1 -Task Mutate) found untested; each test
/// names the mutant it kills (docs/mutation-survivors.md).</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RepairClosingTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private readonly Bench _b = new();
    private readonly string _root;
    private readonly LocalBackupStore _store;

    public RepairClosingTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
        _root = _b.Temp.Folder("backups");
        _store = new LocalBackupStore(_root);
    }

    public void Dispose() => _b.Dispose();

    /// <summary>A run with its set, vda copied (with vdb, and both verified, when <paramref name="bothVerified"/>), then
    /// its process killed on its overlays with the journal as given.</summary>
    private async Task<BackupRun> KilledWithSetAsync(bool bothVerified, string? failureReason = null, string? setIncompleteReason = null)
    {
        var run = await _b.SnapshottedAsync();
        await run.EnsureSetAsync(_store, false, CancellationToken.None);
        foreach (var target in bothVerified ? new[] { "vda", "vdb" } : ["vda"])
        {
            run.BeginCopy(target, _store);
            run.RecordCopied(target, CopyResults.Of(1, 1), CopyService.StoredAsFull, 0);
            if (bothVerified)
                await run.RecordVerifiedAsync(target, "test", CancellationToken.None);
        }
        // What the journal held when the process was killed (a rollback cut short by SIGKILL, a check that failed).
        var journal = RunJournal.TryLoad(Domain)!;
        journal.FailureReason = failureReason;
        journal.SetIncompleteReason = setIncompleteReason;
        RunJournal.Save(journal);
        run.Release();
        return run;
    }

    /// <summary>Repair-KvmBackup's fix of every finding, in order; the CloseJournal fix's line.</summary>
    private async Task<string> RepairAsync()
    {
        var repair = _b.Repair();
        string? closed = null;
        foreach (var finding in await repair.InspectAsync(Domain, Bench.Snap, CancellationToken.None))
        {
            var line = await repair.FixAsync(finding, Bench.Snap, null, null, CancellationToken.None);
            if (finding.Kind == RepairKind.CloseJournal)
                closed = line;
        }
        Assert.Null(RunJournal.TryLoad(Domain));
        return closed ?? throw new Xunit.Sdk.XunitException("no CloseJournal finding");
    }

    private JsonElement BackupJson(BackupRun run) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(_root, Domain, run.RunId, "backup.json"))).RootElement;

    // Kills RunCloser.cs:169 (SetIncompleteReason ?? FailureReason: swapped, left removed, right removed) and
    // RunCloser.cs:173 (why is null ? "" : $" ({why})": true, false and the equality): the reason the set says it
    // cannot be trusted is the first one the run had, or none when the process was simply killed.
    [Theory]
    [InlineData(null, null, "")]
    [InlineData("the pipeline stopped before the backup finished", null, " (the pipeline stopped before the backup finished)")]
    [InlineData("the pipeline stopped before the backup finished", "the copy of vdb failed its check", " (the copy of vdb failed its check)")]
    public async Task A_set_closed_by_Repair_says_why_it_is_Incomplete(string? failureReason, string? setIncompleteReason, string why)
    {
        var run = await KilledWithSetAsync(bothVerified: false, failureReason, setIncompleteReason);

        var line = await RepairAsync();

        var manifest = BackupJson(run);
        Assert.Equal("Incomplete", manifest.GetProperty("Status").GetString());
        Assert.Equal($"run {run.RunId} was interrupted{why}; closed by Repair-KvmBackup", manifest.GetProperty("Reason").GetString());
        Assert.Equal($"journal closed; set {_store.Describe(BackupNames.SetFolder(Domain, run.RunId))} marked Incomplete", line);
    }

    // Kills RepairService.cs:182 (the Complete arm of the switch): the user is told the set a killed run had fully
    // copied and verified is Complete, and why.
    [Fact]
    public async Task A_set_fully_verified_before_the_kill_is_said_Complete_by_Repair()
    {
        var run = await KilledWithSetAsync(bothVerified: true);

        var line = await RepairAsync();

        Assert.Equal("Complete", BackupJson(run).GetProperty("Status").GetString());
        Assert.Equal($"journal closed; set {_store.Describe(BackupNames.SetFolder(Domain, run.RunId))} marked Complete (every disk was copied and verified before the run stopped)", line);
    }
}
