using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The journal is written before every act on the host or the destination: what a SIGKILL or a power cut
/// leaves behind is always in the journal, for Repair-KvmBackup to find. Each fake reads the journal FILE at the
/// moment of the act.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class JournalAheadTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private readonly Bench _b = new();

    public JournalAheadTests(StateDirectoryFixture state) => state.Reset();

    public void Dispose() => _b.Dispose();

    private static RunRecord OnDisk() => RunJournal.TryLoad(Domain) ?? throw new Xunit.Sdk.XunitException($"'{Domain}' has no journal");

    [Fact]
    public async Task The_set_folder_and_its_domain_xml_are_in_the_journal_before_they_are_created()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(_b.Temp.Folder("backups"));
        var set = BackupNames.SetFolder(Domain, run.RunId);
        RunRecord? atFolder = null, atDomainXml = null;
        store.BeforeCreateFolder = path =>
        {
            if (path == set)
                atFolder = OnDisk();
            return Task.CompletedTask;
        };
        store.BeforeWriteSmallFile = (path, _) =>
        {
            if (path == BackupNames.DomainXmlPath(set))
                atDomainXml = OnDisk();
            return Task.CompletedTask;
        };

        await run.EnsureSetAsync(store, false, CancellationToken.None);

        Assert.NotNull(atFolder);
        Assert.Equal(set, atFolder.SetFolder);
        Assert.Equal(store.Location, atFolder.Destination);
        Assert.NotNull(atDomainXml);
        Assert.Equal(set, atDomainXml.SetFolder);
        Assert.Equal(store.Location, atDomainXml.Destination);
    }

    [Fact]
    public async Task A_copy_is_in_the_journal_before_its_file_is_written()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(_b.Temp.Folder("backups"));
        var atWrite = new Dictionary<string, RunRecord>();
        store.WrapWriter = (path, writer) =>
        {
            lock (atWrite)
                atWrite[path] = OnDisk();
            return writer;
        };

        run.BeginCopy("vda", store);

        // The declaration itself is on disk as soon as BeginCopy returns, before any byte is read or written.
        Assert.NotNull(OnDisk().Disk("vda").CopyStartedUtc);
        Assert.Null(OnDisk().Disk("vdb").CopyStartedUtc);
        run.CopyAbandoned("vda");

        Assert.Empty(await _b.CopyAllAsync(run, store));
        Assert.Equal(4, atWrite.Count); // each copy and its digest list
        foreach (var disk in run.Record.Disks)
        {
            // Before the copy's file is made, the journal says the copy started, and how: full here, and why.
            var journal = atWrite[BackupNames.PartialInSet(run.Record.SetFolder!, disk.SetFile)];
            Assert.NotNull(journal.Disk(disk.Target).CopyStartedUtc);
            Assert.Contains("no earlier Complete set", journal.Disk(disk.Target).FullBecause, StringComparison.Ordinal);
            Assert.Contains(BackupNames.Partial(BackupNames.DigestListInSet(run.Record.SetFolder!, disk.SetFile)), atWrite.Keys);
        }
    }

    [Fact]
    public async Task A_commit_is_in_the_journal_before_blockcommit_runs()
    {
        var run = await _b.SnapshottedAsync();
        RunRecord? atBlockCommit = null;
        _b.Host.OnBlockCommit = call =>
        {
            atBlockCommit ??= OnDisk();
            return _b.Host.CommitAndPivot(call);
        };
        var disk = run.Record.Disk("vda");

        run.BeginCommit("vda");
        Assert.NotNull(OnDisk().Disk("vda").CommitStartedUtc);
        await new CommitService(_b.Host.Virsh, _b.Host.QemuImg, new RecordingSink())
            .CommitAsync(new CommitTarget(Domain, disk.Target, disk.Source, disk.Format, disk.Overlay), 0, null, CancellationToken.None);

        Assert.NotNull(atBlockCommit);
        Assert.NotNull(atBlockCommit.Disk("vda").CommitStartedUtc);
        Assert.Null(atBlockCommit.Disk("vdb").CommitStartedUtc);
    }
}
