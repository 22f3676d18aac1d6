namespace OdaKvmBackup.Core.Copies;

/// <summary>
/// What an incremental copy starts from (issue 15): the destination file already holds the base set's copy (a clone
/// made by <see cref="Stores.IBackupStore.CloneFileAsync"/>), described by <paramref name="List"/>, the base's block
/// digest list as it was checked against the base manifest. A block of the frozen disk whose digest equals the
/// list's at the same index is neither sent nor written, unless its segment is in <paramref name="RottedSegments"/>:
/// segments whose base copy no longer reads as the list says (found before the snapshot), sent again in full.
/// </summary>
internal sealed record CopyBase(BlockDigestList List, IReadOnlySet<long> RottedSegments);
