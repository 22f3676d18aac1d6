namespace OdaKvmBackup.Core.WayBack;

/// <summary>
/// A store that can run `qemu-img check` where its files lie (an SSH store, on the server). Optional: a remote
/// store without it gets its copies' digests checked, and "not run" for qemu-img check.
/// </summary>
internal interface IImageCheckingStore
{
    /// <summary>Null when the image has no errors, else what qemu-img said.</summary>
    Task<string?> CheckImageAsync(string relativePath, string format, CancellationToken ct);
}

/// <summary>
/// Test-KvmBackup without -Boot: every copy of a set is read again from storage and compared with the manifest (a set
/// of format OdaKvmBackup/3 by its block digest list, see <see cref="ReadBackWithListAsync"/>; an earlier set by its
/// content digest or segment digests, see <see cref="ReadBackAsync"/>), and qemu-img check runs on each qcow2 copy. Copies are only ever read. For a set on a
/// remote store the reading happens where the copies lie (see <see cref="ReadBackAsync"/>).
/// </summary>
internal sealed class VerifyService(QemuImgClient qemuImg, IOperationSink sink)
{
    /// <summary>Tests a set; a damaged copy is recorded in the result's <see cref="BackupSetTestResult.Errors"/> as an
    /// error that names the set and the disk, and the other copies are still tested.</summary>
    public async Task<BackupSetTestResult> VerifyAsync(BackupSetInfo set, IBackupStore store, CancellationToken ct)
    {
        var started = DateTime.UtcNow;
        var result = new BackupSetTestResult(set) { ReadWhere = store.IsRemote ? "on the server" : "on this host" };
        if (set.Manifest.Status != BackupSetStatus.Complete)
        {
            var error = new BackupException(ErrorIds.BackupSetNotComplete, BackupErrorCategory.InvalidData,
                $"The set {Describe(set)} is {set.Status}{(set.Reason is null ? "" : $" ({set.Reason})")}: it cannot be restored from, so its copies were not tested.",
                $"Test and restore Complete sets only: Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete | Test-KvmBackup.", set.Location);
            result.Fail(error);
            result.Duration = DateTime.UtcNow - started;
            return result;
        }
        var disks = new List<DiskTestResult>();
        for (var i = 0; i < set.Manifest.Disks.Count; i++)
        {
            var disk = set.Manifest.Disks[i];
            var relative = set.FileInSet(disk.File);
            var location = store.Describe(relative);
            var activity = $"Testing {Describe(set)}";
            sink.Progress(new ProgressUpdate(ProgressIds.Verify, null, activity, $"{disk.Target}: reading {location}", i * 100 / set.Manifest.Disks.Count));
            string digestCheck;
            string? digestProblem;
            bool missing;
            try
            {
                (digestCheck, digestProblem, missing) = set.Manifest.Format == CheckedManifest.KnownFormat
                    ? await ReadBackWithListAsync(store, set.SetFolder, disk, ct).ConfigureAwait(false)
                    : await ReadBackAsync(store, relative, disk, ct).ConfigureAwait(false);
            }
            catch (BackupException ex) when (ex.ErrorId == ErrorIds.BackupCopyUnsafe)
            {
                result.Fail(ex);
                disks.Add(new DiskTestResult(disk.Target, disk.File, disk.Format, false, "not read: the copy is unsafe", "not run: the copy is unsafe", ex.Message, location));
                continue;
            }
            var imageCheck = "not applicable (raw)";
            string? imageProblem = null;
            if (!missing && digestProblem is null && !store.IsRemote)
            {
                // qemu-img check opens a qcow2's backing and data files: the copy is inspected first.
                try
                {
                    await CopyInspection.RequireSafeAsync(qemuImg, set, disk, location, ct).ConfigureAwait(false);
                }
                catch (BackupException ex) when (ex.ErrorId == ErrorIds.BackupCopyUnsafe)
                {
                    result.Fail(ex);
                    disks.Add(new DiskTestResult(disk.Target, disk.File, disk.Format, false, digestCheck, "not run: the copy is unsafe", ex.Message, location));
                    continue;
                }
            }
            if (!missing && disk.Format == "qcow2")
            {
                if (!store.IsRemote)
                    imageProblem = await qemuImg.CheckAsync(location, disk.Format, ct).ConfigureAwait(false);
                else if (store is IImageCheckingStore remote)
                    imageProblem = await remote.CheckImageAsync(relative, disk.Format, ct).ConfigureAwait(false);
                imageCheck = store.IsRemote && store is not IImageCheckingStore ? "not run (the server's store cannot run qemu-img)"
                    : imageProblem is null ? "no errors" : imageProblem;
            }
            var problem = digestProblem ?? imageProblem;
            if (problem is not null)
            {
                var error = new BackupException(missing ? ErrorIds.BackupCopyMissing : ErrorIds.BackupCopyDamaged, BackupErrorCategory.InvalidData,
                    $"The copy of {disk.Target} in the set {Describe(set)} ({location}) is damaged: {problem}.",
                    $"Do not restore from this set. Restore from another Complete set (Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete), back up '{set.DomainName}' again, and check the storage of {set.Destination} (dmesg, file system errors).",
                    location);
                result.Fail(error);
            }
            disks.Add(new DiskTestResult(disk.Target, disk.File, disk.Format, problem is null, digestCheck, imageCheck, problem, location));
        }
        sink.Progress(new ProgressUpdate(ProgressIds.Verify, null, $"Testing {Describe(set)}", "Done", 100, Completed: true));
        result.Disks = disks;
        result.Duration = DateTime.UtcNow - started;
        return result;
    }

    /// <summary>
    /// THE seam for remote stores: reads a copy back where it lies and compares it with the manifest. A local
    /// store is read here (page cache dropped first) and its content digest compared. A remote store is asked for
    /// segment digests, computed on the server (<see cref="IBackupStore.SegmentDigestsAsync"/>), compared with the
    /// manifest's <see cref="ManifestDisk.SegmentDigests"/>, and the segments without one must read as zeros there
    /// (<see cref="RemoteCopyCheck"/>); a remote set whose manifest has no segment digests at all is read over the
    /// network (and said so), since nothing else can prove it. Returns what was checked, the problem (null when
    /// the copy is good), and whether the file is missing.
    /// </summary>
    public async Task<(string Check, string? Problem, bool Missing)> ReadBackAsync(IBackupStore store, string relativePath, ManifestDisk disk, CancellationToken ct)
    {
        var entry = await store.GetEntryAsync(relativePath, ct).ConfigureAwait(false);
        if (entry is null || entry.IsFolder)
            return ("file missing", "the file is missing", true);
        if (!store.IsRemote)
        {
            // Opened through the store first: only a regular file reached through no link is read here (a FIFO
            // would hang the read, a link would read a host disk); BackupCopyUnsafe otherwise.
            await (await store.OpenReadAsync(relativePath, ct).ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
        }
        if (disk.ContentDigest is null)
            return ("no digest in the manifest", "backup.json records no content digest for it", false);
        if (disk.SizeBytes is { } expectedSize && entry.Size != expectedSize)
            return ("size differs", $"its size is {entry.Size} bytes, backup.json says {expectedSize}", false);
        if (!store.IsRemote)
        {
            var local = await SparseCopy.DigestAsync(store.Describe(relativePath), null, ct).ConfigureAwait(false);
            return local.ContentDigest == disk.ContentDigest
                ? ("content digest equal to backup.json's (read from storage on this host)", null, false)
                : ("content digest differs", $"its content digest is {local.ContentDigest}, backup.json says {disk.ContentDigest}", false);
        }
        if (disk.SegmentDigests is { } expected && disk.SegmentSize is { } segmentSize and > 0)
        {
            // Segments that held only zeros have no digest: they must still read as zeros on the server.
            var check = await RemoteCopyCheck.RunAsync(store, relativePath, entry.Size, segmentSize, expected, ct).ConfigureAwait(false);
            if (check.Failed is { } failed)
            {
                var bytes = $"bytes {failed.Segment * segmentSize} to {Math.Min((failed.Segment + 1) * segmentSize, entry.Size) - 1}";
                return failed.ZerosExpected
                    ? ("a segment of zeros holds data", $"segment {failed.Segment} ({bytes}) holds data on the server (from byte {failed.FirstData}) where backup.json says it holds only zeros", false)
                    : ("segment digests differ", $"segment {failed.Segment} ({bytes}) reads differently on the server than backup.json says", false);
            }
            return ($"{check.DataSegments} segment digests equal to backup.json's and {check.ZeroSegments} segments of zeros read as zeros (read on the server)", null, false);
        }
        sink.Warning($"backup.json has no segment digests for {store.Describe(relativePath)}, so it cannot be checked on the server: it is read over the network.");
        await using var reader = await store.OpenReadAsync(relativePath, ct).ConfigureAwait(false);
        var streamed = await StreamCopy.CopyAsync(reader, null, null, ct, legacyContentDigest: true).ConfigureAwait(false);
        return streamed.ContentDigest == disk.ContentDigest
            ? ("content digest equal to backup.json's (read over the network)", null, false)
            : ("content digest differs", $"its content digest is {streamed.ContentDigest}, backup.json says {disk.ContentDigest}", false);
    }

    /// <summary>
    /// A copy of a set of format OdaKvmBackup/3 (issue 15), read back where it lies and compared with its block digest
    /// list: the list itself first (<see cref="StoredDigestList"/>: its length that of the copy's size, its SHA-256 the
    /// manifest's Digests), then the copy. Locally the copy's own list is taken from storage (pages dropped) and its
    /// SHA-256 must be the manifest's Digests; on an SSH server every segment's SHA-256 is computed there and compared
    /// with the list's, the segments the list says are all zeros read as zeros there instead
    /// (<see cref="RemoteCopyCheck"/>). Nothing of another set is read: a set verifies alone. A failure names the first
    /// segment (and, locally, the first 64 KiB block) that reads differently.
    /// </summary>
    public async Task<(string Check, string? Problem, bool Missing)> ReadBackWithListAsync(IBackupStore store, string setFolder, ManifestDisk disk, CancellationToken ct)
    {
        var relativePath = BackupNames.FileInSet(setFolder, disk.File);
        var entry = await store.GetEntryAsync(relativePath, ct).ConfigureAwait(false);
        if (entry is null || entry.IsFolder)
            return ("file missing", "the file is missing", true);
        if (!store.IsRemote)
        {
            // As in ReadBackAsync: only a regular file reached through no link is read here.
            await (await store.OpenReadAsync(relativePath, ct).ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
        }
        if (disk.Digests is null || disk.SizeBytes is not { } size)
            return ("no digest list in the manifest", "backup.json records no Digests for it", false);
        if (entry.Size != size)
            return ("size differs", $"its size is {entry.Size} bytes, backup.json says {size}", false);
        var stored = await StoredDigestList.ReadAsync(store, setFolder, disk.File, size, disk.Digests, ct).ConfigureAwait(false);
        if (!store.IsRemote)
        {
            var local = await SparseCopy.DigestListAsync(store.Describe(relativePath), null, ct).ConfigureAwait(false);
            if (local.Sha256 != disk.Digests)
            {
                var where = stored.List is { } list ? FirstDifference(list, local, size) : null;
                return ("digest list differs", where is null
                    ? $"read from storage on this host it has the digest list {local.Sha256}, backup.json records {disk.Digests}{(stored.Problem is null ? "" : $"; and {stored.Problem}")}"
                    : $"{where} reads differently from storage on this host than its digest list says", false);
            }
            if (stored.List is null)
                return ("digest list unusable", $"{stored.Problem} (the copy itself reads back as backup.json says: it can still be restored, but the next backup copies this disk in full)", false);
            return ($"digest list equal to backup.json's, and the copy read from storage on this host equal to it ({local.SegmentCount} segments)", null, false);
        }
        if (stored.List is not { } remoteList)
            return ("digest list unusable", $"{stored.Problem}: without it the copy cannot be checked on the server", false);
        var check = await RemoteCopyCheck.RunAsync(store, relativePath, remoteList, findAll: false, null, ct).ConfigureAwait(false);
        if (check.Failed is { } failed)
        {
            var bytes = SegmentBytes(failed.Segment, size);
            return failed.ZerosExpected
                ? ("a segment of zeros holds data", $"segment {failed.Segment} ({bytes}) holds data on the server (from byte {failed.FirstData}) where its digest list says it holds only zeros", false)
                : ("segment digests differ", $"segment {failed.Segment} ({bytes}) reads differently on the server than its digest list says", false);
        }
        return ($"digest list equal to backup.json's, and {check.DataSegments} segment digests equal to it and {check.ZeroSegments} segments of zeros read as zeros (read on the server{(store.DigestTool is { } tool ? ", hashed with " + tool : "")})", null, false);
    }

    /// <summary>The first segment where <paramref name="actual"/> (the copy as read) differs from <paramref name="expected"/>
    /// (its stored list), with the first 64 KiB block in it whose digest differs when one does.</summary>
    private static string? FirstDifference(BlockDigestList expected, BlockDigestList actual, long size)
    {
        foreach (var segment in expected.DifferingSegments(actual))
        {
            var first = segment * BlockDigestList.BlocksPerSegment;
            var end = Math.Min(first + BlockDigestList.BlocksPerSegment, expected.BlockCount);
            for (var block = first; block < end; block++)
            {
                if (!expected.BlockDigest(block).SequenceEqual(actual.BlockDigest(block)))
                    return $"segment {segment} ({SegmentBytes(segment, size)}), from the 64 KiB block at byte {block * BlockDigestList.BlockSize},";
            }
            return $"segment {segment} ({SegmentBytes(segment, size)})";
        }
        return null;
    }

    private static string SegmentBytes(long segment, long size) =>
        $"bytes {segment * BlockDigestList.SegmentSize} to {Math.Min((segment + 1) * BlockDigestList.SegmentSize, size) - 1}";

    public static string Describe(BackupSetInfo set) => $"{set.DomainName} {set.RunId}";
}
