namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>The result of a full copy of a file of <c>size</c> bytes holding no data (its digest list: zeros), with
/// the content digest of Format OdaKvmBackup/2 given: for tests of the run's record keeping, which copy nothing.</summary>
internal static class CopyResults
{
    public static CopyResult Copied(long size, long dataBytes, string contentDigest) =>
        new(size, dataBytes, new BlockDigestListBuilder(size, twoThreads: false).Complete(), size, dataBytes, 0, contentDigest);
}
