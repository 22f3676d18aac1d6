namespace OdaKvmBackup.Core.WayBack;

/// <summary>A copy's block digest list as read back from its set: the list, or why it cannot be trusted.</summary>
internal sealed record StoredDigestListRead(BlockDigestList? List, string? Problem, bool Missing);

/// <summary>
/// Reads the block digest list of a copy in a set of format OdaKvmBackup/3 (issue 15), as untrusted input: its name is
/// derived from the copy's (<see cref="BackupNames.DigestListInSet"/>, never taken from a manifest), its length must be
/// exactly that of the list of a copy of the manifest's size (so nothing larger is ever read), its header must describe
/// that size, and its SHA-256 must be the manifest's <see cref="ManifestDisk.Digests"/>. The one reader of stored lists,
/// for the base of an incremental copy, Test-KvmBackup and Restore-KvmBackup alike.
/// </summary>
internal static class StoredDigestList
{
    /// <summary>The list of <paramref name="file"/> in <paramref name="setFolder"/>, checked against the manifest's
    /// <paramref name="copySize"/> and <paramref name="digests"/>. What a set holds never throws: a missing, forged or
    /// unreadable list is a <see cref="StoredDigestListRead.Problem"/>; the store's own failures (a lost connection)
    /// and cancellation pass through.</summary>
    public static async Task<StoredDigestListRead> ReadAsync(IBackupStore store, string setFolder, string file, long copySize,
        string digests, CancellationToken ct)
    {
        var relative = BackupNames.DigestListInSet(setFolder, file);
        var where = store.Describe(relative);
        if (copySize is < 0 or > BlockDigestList.MaxFileSize)
            return new(null, $"backup.json gives its copy a size of {copySize} bytes, which no digest list describes", false);
        var length = BlockDigestList.SerializedLength(copySize);
        try
        {
            var entry = await store.GetEntryAsync(relative, ct).ConfigureAwait(false);
            if (entry is null || entry.IsFolder)
                return new(null, $"its digest list {FileSystemPaths.Quote(where)} is missing", true);
            if (entry.Size != length)
                return new(null, $"its digest list {FileSystemPaths.Quote(where)} holds {entry.Size} bytes where the list of a {copySize}-byte copy holds {length}", false);
            // Read one byte more than expected: a file that grew since it was listed is refused, not truncated.
            var bytes = new byte[length + 1];
            var read = 0;
            await using (var reader = await store.OpenReadAsync(relative, ct).ConfigureAwait(false))
            {
                while (read < bytes.Length)
                {
                    var n = await reader.ReadAsync(read, bytes.AsMemory(read), ct).ConfigureAwait(false);
                    if (n == 0)
                        break;
                    read += n;
                }
            }
            var list = BlockDigestList.Parse(bytes.AsSpan(0, read), length, copySize, where);
            if (!string.Equals(list.Sha256, digests, StringComparison.Ordinal))
                return new(null, $"its digest list {FileSystemPaths.Quote(where)} does not match backup.json (its SHA-256 is {list.Sha256}, backup.json records {digests})", false);
            return new(list, null, false);
        }
        catch (BackupException ex) when (!Stores.Ssh.SftpConnection.IsConnectionProblem(ex))
        {
            // A forged list (BackupSetUnreadable), a link or a FIFO in its place (BackupCopyUnsafe), a file that
            // cannot be opened: the list cannot be trusted, whatever the reason.
            return new(null, ex.Message.TrimEnd('.'), false);
        }
    }
}
